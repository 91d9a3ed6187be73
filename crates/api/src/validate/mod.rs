//! Re-validation of user input into typed requests.
//!
//! The CRD schema already rejects most bad input, but the operator never trusts it: objects can
//! predate a schema change, or come from a cluster without CEL. Every refusal names the field.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use regex::Regex;
use uuid::Uuid;

use crate::arm::ArmId;
use crate::duration::LeaseDuration;
use crate::field::FieldErrors;
use crate::hours::ActiveWindow;
use crate::role::RoleRef;
use crate::v1alpha1::{
    AccessGrantSpec, AccessPolicySpec, DEFAULT_AUDIENCE, LabelSelector, MAX_AUDIENCE_LEN,
    MAX_CONDITION_LEN, MAX_JUSTIFICATION_LEN, MAX_POLICY_ENTRIES, MAX_REQUESTER_GROUPS, MAX_ROLES,
    MAX_USERNAME_LEN,
};

/// The identity a grant gives access to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    ManagedIdentity(ArmId),
    ServicePrincipal(Uuid),
    Application(Uuid),
}

impl Identity {
    /// Short display form for the IDENTITY column.
    pub fn display_name(&self) -> String {
        match self {
            Self::ManagedIdentity(id) => format!("mi/{}", id.name().unwrap_or(id.as_str())),
            Self::ServicePrincipal(id) => format!("sp/{id}"),
            Self::Application(id) => format!("app/{id}"),
        }
    }
}

/// One requested role at one scope, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleGrant {
    /// The role as the user wrote it (kept for status and messages).
    pub written: String,
    pub role: RoleRef,
    pub scope: ArmId,
    pub condition: Option<String>,
}

/// Federation of a ServiceAccount of the grant's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationRequest {
    pub service_account: String,
    pub audience: String,
}

impl FederationRequest {
    /// The token subject Kubernetes puts in a ServiceAccount token.
    pub fn subject(&self, namespace: &str) -> String {
        format!("system:serviceaccount:{namespace}:{}", self.service_account)
    }
}

/// A validated AccessGrant spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRequest {
    pub identity: Identity,
    pub roles: Vec<RoleGrant>,
    pub federation: Option<FederationRequest>,
    pub duration: Option<LeaseDuration>,
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: Option<DateTime<Utc>>,
    pub justification: Option<String>,
    pub revoked: bool,
    /// The Kubernetes user who asked (admission makes it the creating user).
    pub requester: Option<String>,
    /// The groups the requester asks as (admission makes them groups the creating user is in).
    pub requester_groups: Vec<String>,
    pub break_glass: bool,
}

impl GrantRequest {
    /// When a lease activated at `start` ends: `duration` after `window.notBefore` if set (an
    /// absolute window stays absolute, so an old manifest applied late grants nothing extra),
    /// else after `start`; capped by `window.notAfter`.
    pub fn expiry_from(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        let anchor = self.not_before.unwrap_or(start);
        let by_duration = self
            .duration
            .and_then(|d| anchor.checked_add_signed(d.to_chrono()));
        match (by_duration, self.not_after) {
            (Some(d), Some(a)) => d.min(a),
            (Some(d), None) => d,
            (None, Some(a)) => a,
            // Validation guarantees one of the two; an unreachable end is treated as "now",
            // so the lease is empty rather than unbounded.
            (None, None) => start,
        }
    }
}

/// Parses an RFC 3339 timestamp with a zone.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 timestamp with a zone ({e})"))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn parse_guid(s: &str) -> Result<Uuid, String> {
    // Uuid::parse_str also takes braced and URN forms; Entra object IDs are the plain hyphenated form.
    if s.len() != 36 {
        return Err(format!(
            "{s:?} is not a GUID (expected 8-4-4-4-12 hex digits)"
        ));
    }
    Uuid::try_parse(s).map_err(|_| format!("{s:?} is not a GUID (expected 8-4-4-4-12 hex digits)"))
}

/// Same role as written: names compare case-insensitively (as Azure's do), a GUID equals its
/// role definition ID. Resolution against the catalogue comes later, in policy evaluation.
fn same_role(a: &RoleRef, b: &RoleRef) -> bool {
    fn guid(r: &RoleRef) -> Option<&Uuid> {
        match r {
            RoleRef::Guid(g) | RoleRef::DefinitionId { guid: g, .. } => Some(g),
            RoleRef::Name(_) => None,
        }
    }
    match (a, b) {
        (RoleRef::Name(x), RoleRef::Name(y)) => x.eq_ignore_ascii_case(y),
        _ => guid(a).is_some() && guid(a) == guid(b),
    }
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Validates a grant spec. Returns every problem found, each naming its field.
pub fn validate_grant(spec: &AccessGrantSpec) -> Result<GrantRequest, FieldErrors> {
    let mut errs = FieldErrors::default();

    let id = &spec.identity;
    let kinds = [
        id.managed_identity.is_some(),
        id.service_principal.is_some(),
        id.application.is_some(),
    ];
    let identity = match kinds.iter().filter(|k| **k).count() {
        1 => {
            if let Some(mi) = &id.managed_identity {
                match ArmId::parse(mi) {
                    Ok(arm) if arm.is_managed_identity() => Some(Identity::ManagedIdentity(arm)),
                    Ok(_) => {
                        errs.push(
                            "spec.identity.managedIdentity",
                            "must be a Microsoft.ManagedIdentity/userAssignedIdentities resource ID",
                        );
                        None
                    }
                    Err(e) => {
                        errs.push("spec.identity.managedIdentity", e.to_string());
                        None
                    }
                }
            } else if let Some(sp) = &id.service_principal {
                parse_guid(&sp.object_id)
                    .map_err(|e| errs.push("spec.identity.servicePrincipal.objectId", e))
                    .ok()
                    .map(Identity::ServicePrincipal)
            } else if let Some(app) = &id.application {
                parse_guid(&app.object_id)
                    .map_err(|e| errs.push("spec.identity.application.objectId", e))
                    .ok()
                    .map(Identity::Application)
            } else {
                None
            }
        }
        n => {
            errs.push(
                "spec.identity",
                format!("exactly one of managedIdentity, servicePrincipal or application must be set (found {n})"),
            );
            None
        }
    };

    if spec.roles.is_empty() || spec.roles.len() > MAX_ROLES as usize {
        errs.push(
            "spec.roles",
            format!(
                "must list 1 to {MAX_ROLES} roles (found {})",
                spec.roles.len()
            ),
        );
    }
    let mut roles = Vec::with_capacity(spec.roles.len());
    for (i, r) in spec.roles.iter().enumerate() {
        let role = RoleRef::parse(&r.role)
            .map_err(|e| errs.push(format!("spec.roles[{i}].role"), e.to_string()));
        let scope = match ArmId::parse(&r.scope) {
            Ok(s) if s.is_scope() && s.subscription().is_some() => Ok(s),
            // The operator lists, repairs and sweeps role assignments per subscription; one
            // at a management group would be invisible to all three, so none is ever made.
            Ok(s) if s.is_scope() => {
                errs.push(
                    format!("spec.roles[{i}].scope"),
                    "management group scopes are not supported: grant at a subscription, \
                     resource group or resource below it",
                );
                Err(())
            }
            Ok(_) => {
                errs.push(
                    format!("spec.roles[{i}].scope"),
                    "must be a subscription, resource group or resource ID",
                );
                Err(())
            }
            Err(e) => {
                errs.push(format!("spec.roles[{i}].scope"), e.to_string());
                Err(())
            }
        };
        if let Some(c) = &r.condition {
            if c.trim().is_empty() {
                errs.push(
                    format!("spec.roles[{i}].condition"),
                    "must not be empty when set",
                );
            } else if c.len() > MAX_CONDITION_LEN as usize {
                errs.push(
                    format!("spec.roles[{i}].condition"),
                    format!("must be at most {MAX_CONDITION_LEN} bytes"),
                );
            }
        }
        if let (Ok(role), Ok(scope)) = (role, scope) {
            roles.push(RoleGrant {
                written: r.role.clone(),
                role,
                scope,
                condition: r.condition.clone(),
            });
        }
    }
    for (i, a) in roles.iter().enumerate() {
        if let Some(j) = roles[..i]
            .iter()
            .position(|b| same_role(&b.role, &a.role) && b.scope == a.scope)
        {
            errs.push(
                format!("spec.roles[{i}]"),
                format!("duplicates spec.roles[{j}] (same role and scope)"),
            );
        }
    }

    let federation = spec.federation.as_ref().and_then(|f| {
        let mut ok = true;
        if !is_dns_subdomain(&f.service_account) {
            errs.push("spec.federation.serviceAccount", format!("{:?} is not a valid ServiceAccount name", f.service_account));
            ok = false;
        }
        if f.audience.trim().is_empty() || f.audience.len() > MAX_AUDIENCE_LEN as usize || !printable(&f.audience) {
            errs.push("spec.federation.audience", format!("must be 1 to {MAX_AUDIENCE_LEN} printable characters"));
            ok = false;
        }
        if id.service_principal.is_some() && id.managed_identity.is_none() && id.application.is_none() {
            errs.push(
                "spec.federation",
                "a servicePrincipal identity cannot be federated; use managedIdentity or application",
            );
            ok = false;
        }
        ok.then(|| FederationRequest { service_account: f.service_account.clone(), audience: f.audience.clone() })
    });

    let duration = spec.duration.as_deref().and_then(|d| {
        LeaseDuration::parse(d)
            .map_err(|e| errs.push("spec.duration", e.to_string()))
            .ok()
    });
    let window = spec.window.as_ref();
    let not_before = window.and_then(|w| w.not_before.as_deref()).and_then(|t| {
        parse_timestamp(t)
            .map_err(|e| errs.push("spec.window.notBefore", e))
            .ok()
    });
    let not_after = window.and_then(|w| w.not_after.as_deref()).and_then(|t| {
        parse_timestamp(t)
            .map_err(|e| errs.push("spec.window.notAfter", e))
            .ok()
    });
    if let (Some(b), Some(a)) = (not_before, not_after)
        && b >= a
    {
        errs.push(
            "spec.window.notBefore",
            "must be before spec.window.notAfter",
        );
    }
    if spec.duration.is_none() && window.and_then(|w| w.not_after.as_ref()).is_none() {
        errs.push(
            "spec.duration",
            "either spec.duration or spec.window.notAfter is required",
        );
    }
    if let Some(j) = &spec.justification
        && (j.len() > MAX_JUSTIFICATION_LEN as usize || !printable(j))
    {
        errs.push(
            "spec.justification",
            format!("must be at most {MAX_JUSTIFICATION_LEN} bytes without control characters"),
        );
    }
    if let Some(r) = &spec.requester
        && (r.trim().is_empty() || r.len() > MAX_USERNAME_LEN as usize || !printable(r))
    {
        errs.push(
            "spec.requester",
            format!("must be a Kubernetes user name: 1 to {MAX_USERNAME_LEN} printable characters"),
        );
    }
    if spec.requester_groups.len() > MAX_REQUESTER_GROUPS as usize {
        errs.push(
            "spec.requesterGroups",
            format!("must list at most {MAX_REQUESTER_GROUPS} groups"),
        );
    }
    for (i, g) in spec.requester_groups.iter().enumerate() {
        if g.trim().is_empty() || g.len() > MAX_USERNAME_LEN as usize || !printable(g) {
            errs.push(
                format!("spec.requesterGroups[{i}]"),
                format!(
                    "must be a Kubernetes group name: 1 to {MAX_USERNAME_LEN} printable characters"
                ),
            );
        }
    }

    match identity {
        Some(identity) if errs.is_empty() => Ok(GrantRequest {
            identity,
            roles,
            federation,
            duration,
            not_before,
            not_after,
            justification: spec.justification.clone(),
            revoked: spec.revoked,
            requester: spec.requester.clone(),
            requester_groups: spec.requester_groups.clone(),
            break_glass: spec.break_glass,
        }),
        _ => Err(errs),
    }
}

/// A glob over names: `*` matches any run of characters, `?` one character.
/// For ARM IDs `*` and `?` never cross a `/` and matching ignores case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    arm: bool,
}

impl Glob {
    pub fn name(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            arm: false,
        }
    }

    /// A glob over ARM IDs, compared case-insensitively; a trailing slash is ignored.
    pub fn arm(pattern: &str) -> Self {
        let p = pattern.strip_suffix('/').unwrap_or(pattern);
        Self {
            pattern: p.to_ascii_lowercase(),
            arm: true,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.arm {
            glob_match(
                self.pattern.as_bytes(),
                text.to_ascii_lowercase().as_bytes(),
                Some(b'/'),
            )
        } else {
            glob_match(self.pattern.as_bytes(), text.as_bytes(), None)
        }
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice, no recursion.
fn glob_match(pattern: &[u8], text: &[u8], separator: Option<u8>) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if (c == b'?' && Some(text[t]) != separator) || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // A star may absorb the next character unless it is a separator.
                Some((sp, st)) if Some(text[st]) != separator => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                _ => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// An entry of a policy list that names either everything (`*`) or one object ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdMatcher {
    Any,
    Exact(Uuid),
}

/// A validated AccessPolicy.
#[derive(Clone, Debug)]
pub struct PolicyRules {
    pub namespaces: Vec<Glob>,
    pub namespace_selector: Option<LabelSelector>,
    pub identities: Vec<Glob>,
    pub service_principals: Vec<IdMatcher>,
    pub applications: Vec<IdMatcher>,
    /// Role references as written; resolved against the catalogue at evaluation time, so a
    /// custom role the operator learns later is honoured.
    pub roles: Vec<(String, RoleRef)>,
    pub scopes: Vec<ArmId>,
    pub service_accounts: Vec<Glob>,
    pub max_duration: LeaseDuration,
    pub justification_pattern: Option<Regex>,
    /// Token audiences a federated credential may accept.
    pub audiences: Vec<String>,
    pub allow_privileged_identities: bool,
    /// Whether grants may activate under a management lock.
    pub locks: crate::v1alpha1::LockTolerance,
    pub max_active_grants: Option<u32>,
    /// Grants wait for approvals before they activate.
    pub approval: Option<ApprovalRule>,
    /// Longest break-glass lease; `None`: no break-glass.
    pub break_glass: Option<LeaseDuration>,
    /// Delete the federated credential one token lifetime before the lease ends.
    pub close_federation_early: bool,
    /// Role assignments are requested through Azure PIM with an end time Azure enforces.
    pub pim_expiry: bool,
    /// At most this many accepted extensions of one lease.
    pub max_extensions: Option<u32>,
    /// Grants activate only inside these hours; leases end at the window's close.
    pub active_hours: Option<ActiveWindow>,
    /// The change ticket a grant's justification must name, and who says whether it is open.
    pub ticket: Option<TicketRule>,
    /// `watch.sensitiveActions`, the defaults when none are listed (docs/usage.md).
    pub sensitive_actions: Vec<String>,
    /// `watch.onSensitiveAction`.
    pub on_sensitive_action: crate::v1alpha1::OnSensitiveAction,
}

/// A validated `spec.ticket`.
#[derive(Clone, Debug)]
pub struct TicketRule {
    pub pattern: Regex,
    /// The operator-configured checker asked whether the ticket is open; `None`: none asked.
    pub checker: Option<String>,
}

impl TicketRule {
    /// The ticket a justification names: the pattern's first match, if any.
    pub fn ticket_in<'j>(&self, justification: &'j str) -> Option<&'j str> {
        self.pattern
            .find(justification)
            .map(|m| m.as_str())
            .filter(|t| !t.is_empty())
    }
}

/// Who must approve, and by when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRule {
    pub required: u32,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub timeout: LeaseDuration,
    /// Rules under which a grant needs no human, in the policy's order.
    pub auto_approve: Vec<AutoApprove>,
    /// Further approvers, by the time they become eligible.
    pub escalation: Vec<EscalationTier>,
}

/// One `approval.autoApprove` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoApprove {
    pub max_duration: LeaseDuration,
    /// Role references as written; resolved at evaluation, like the policy's roles.
    pub roles: Vec<(String, RoleRef)>,
    /// Empty: any requester.
    pub requester_groups: Vec<String>,
}

impl AutoApprove {
    /// The rule in words, for the `Approved` condition: `Reader for at most 30m`.
    pub fn describe(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(|(w, _)| w.as_str()).collect();
        let groups = if self.requester_groups.is_empty() {
            String::new()
        } else {
            format!(
                ", requested as a member of {}",
                self.requester_groups.join(" or ")
            )
        };
        format!(
            "{} for at most {}{groups}",
            roles.join(", "),
            self.max_duration
        )
    }
}

/// One `approval.escalation` tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationTier {
    /// How long after the wait started its approvers become eligible.
    pub after: LeaseDuration,
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl EscalationTier {
    pub fn lists(&self, username: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == username) || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// Whether a decision's author may decide, under escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eligibility {
    Eligible,
    /// Listed only in escalation tiers none of which had opened when the decision was made
    /// (or its time is unknown): it never counts, and must be made again once the tier opens.
    TooEarly,
    NotAnApprover,
}

impl ApprovalRule {
    /// May this user, deciding as these groups, approve or deny — ignoring escalation tiers.
    pub fn eligible(&self, username: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == username) || groups.iter().any(|g| self.groups.contains(g))
    }

    /// May this user, deciding as these groups at `decided_at`, approve or deny a grant that has
    /// waited since `since`? The first approvers always; a tier's only once `since + after` has
    /// passed at the decision's own (server-set) creation time. Unknown times never open a tier.
    pub fn eligible_at(
        &self,
        username: &str,
        groups: &[String],
        decided_at: Option<DateTime<Utc>>,
        since: Option<DateTime<Utc>>,
    ) -> Eligibility {
        if self.eligible(username, groups) {
            return Eligibility::Eligible;
        }
        let mut listed = false;
        for tier in self.escalation.iter().filter(|t| t.lists(username, groups)) {
            listed = true;
            if let (Some(at), Some(since)) = (decided_at, since)
                && at >= since + tier.after.to_chrono()
            {
                return Eligibility::Eligible;
            }
        }
        if listed {
            Eligibility::TooEarly
        } else {
            Eligibility::NotAnApprover
        }
    }
}

fn id_matchers(field: &str, list: &[String], errs: &mut FieldErrors) -> Vec<IdMatcher> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            if s == "*" {
                Some(IdMatcher::Any)
            } else {
                parse_guid(s)
                    .map(IdMatcher::Exact)
                    .map_err(|e| errs.push(format!("{field}[{i}]"), e))
                    .ok()
            }
        })
        .collect()
}

fn name_globs(field: &str, list: &[String], errs: &mut FieldErrors) -> Vec<Glob> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let ok = !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*?".contains(&b));
            if ok {
                Some(Glob::name(s))
            } else {
                errs.push(
                    format!("{field}[{i}]"),
                    format!("{s:?} is not a name glob (lowercase DNS characters, '*' and '?')"),
                );
                None
            }
        })
        .collect()
}

/// Validates a policy spec. A policy that fails validation allows nothing.
pub fn validate_policy(spec: &AccessPolicySpec) -> Result<PolicyRules, FieldErrors> {
    let mut errs = FieldErrors::default();
    let lists: [(&str, usize); 7] = [
        ("spec.namespaces", spec.namespaces.len()),
        ("spec.identities", spec.identities.len()),
        ("spec.servicePrincipals", spec.service_principals.len()),
        ("spec.applications", spec.applications.len()),
        ("spec.roles", spec.roles.len()),
        ("spec.scopes", spec.scopes.len()),
        ("spec.serviceAccounts", spec.service_accounts.len()),
    ];
    for (field, len) in lists {
        if len > MAX_POLICY_ENTRIES as usize {
            errs.push(
                field,
                format!("must have at most {MAX_POLICY_ENTRIES} entries"),
            );
        }
    }
    if spec.namespaces.is_empty() && spec.namespace_selector.is_none() {
        errs.push(
            "spec.namespaces",
            "namespaces or namespaceSelector must be set",
        );
    }
    let namespaces = name_globs("spec.namespaces", &spec.namespaces, &mut errs);
    if let Some(sel) = &spec.namespace_selector
        && sel.match_labels.is_empty()
        && sel.match_expressions.is_empty()
    {
        errs.push(
            "spec.namespaceSelector",
            "an empty selector matches every namespace, kube-system included; list labels or \
             expressions, or use spec.namespaces",
        );
    }
    if let Some(sel) = &spec.namespace_selector {
        for (i, e) in sel.match_expressions.iter().enumerate() {
            let field = format!("spec.namespaceSelector.matchExpressions[{i}]");
            match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    errs.push(field, "values must not be empty for In and NotIn")
                }
                "Exists" | "DoesNotExist" if !e.values.is_empty() => {
                    errs.push(field, "values must be empty for Exists and DoesNotExist")
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => errs.push(
                    format!("{field}.operator"),
                    format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                ),
            }
        }
    }
    let identities = spec
        .identities
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            // Validate the glob as an ID with its wildcards replaced, so `//`, `..` and
            // non-ASCII are refused in patterns too.
            match ArmId::parse(&s.replace(['*', '?'], "x")) {
                Ok(_) => Some(Glob::arm(s)),
                Err(e) => {
                    errs.push(format!("spec.identities[{i}]"), e.to_string());
                    None
                }
            }
        })
        .collect();
    let service_principals = id_matchers(
        "spec.servicePrincipals",
        &spec.service_principals,
        &mut errs,
    );
    let applications = id_matchers("spec.applications", &spec.applications, &mut errs);
    if spec.identities.is_empty()
        && spec.service_principals.is_empty()
        && spec.applications.is_empty()
    {
        errs.push(
            "spec.identities",
            "at least one of identities, servicePrincipals or applications must be listed",
        );
    }
    if spec.roles.is_empty() {
        errs.push("spec.roles", "must list at least one role");
    }
    let roles = spec
        .roles
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match RoleRef::parse(r) {
            Ok(role) => Some((r.clone(), role)),
            Err(e) => {
                errs.push(format!("spec.roles[{i}]"), e.to_string());
                None
            }
        })
        .collect();
    if spec.scopes.is_empty() {
        errs.push("spec.scopes", "must list at least one scope");
    }
    let scopes = spec
        .scopes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match ArmId::parse(s) {
            Ok(id) => Some(id),
            Err(e) => {
                errs.push(format!("spec.scopes[{i}]"), e.to_string());
                None
            }
        })
        .collect();
    let service_accounts = name_globs("spec.serviceAccounts", &spec.service_accounts, &mut errs);
    let max_duration = LeaseDuration::parse(&spec.max_duration)
        .map_err(|e| errs.push("spec.maxDuration", e.to_string()))
        .ok();
    let justification_pattern = spec.justification_pattern.as_deref().and_then(|p| {
        regex::RegexBuilder::new(p)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                errs.push(
                    "spec.justificationPattern",
                    format!("not a valid regular expression: {e}"),
                )
            })
            .ok()
    });
    for (i, a) in spec.audiences.iter().enumerate() {
        if a.trim().is_empty() || a.len() > MAX_AUDIENCE_LEN as usize || !printable(a) {
            errs.push(
                format!("spec.audiences[{i}]"),
                format!("must be 1 to {MAX_AUDIENCE_LEN} printable characters"),
            );
        }
    }
    if spec.max_active_grants == Some(0) {
        errs.push(
            "spec.maxActiveGrants",
            "must be at least 1 (leave it unset for no limit)",
        );
    }
    let approval = spec.approval.as_ref().and_then(|a| {
        let mut ok = true;
        if !(1..=16).contains(&a.required) {
            errs.push("spec.approval.required", "must be 1 to 16");
            ok = false;
        }
        if a.approvers.users.is_empty() && a.approvers.groups.is_empty() {
            errs.push(
                "spec.approval.approvers",
                "must list at least one user or group: nobody could approve",
            );
            ok = false;
        }
        for (field, list) in [
            ("spec.approval.approvers.users", &a.approvers.users),
            ("spec.approval.approvers.groups", &a.approvers.groups),
        ] {
            for (i, n) in list.iter().enumerate() {
                if n.trim().is_empty() || n.len() > MAX_USERNAME_LEN as usize || !printable(n) {
                    errs.push(
                        format!("{field}[{i}]"),
                        format!("must be 1 to {MAX_USERNAME_LEN} printable characters"),
                    );
                    ok = false;
                }
            }
        }
        let timeout = LeaseDuration::parse(&a.timeout)
            .map_err(|e| errs.push("spec.approval.timeout", e.to_string()))
            .ok();
        let auto_approve = auto_approve_rules(&a.auto_approve, &mut errs);
        let escalation = escalation_tiers(&a.escalation, &mut errs);
        timeout
            .filter(|_| ok)
            .zip(auto_approve)
            .zip(escalation)
            .map(|((timeout, auto_approve), escalation)| ApprovalRule {
                required: a.required,
                users: a.approvers.users.clone(),
                groups: a.approvers.groups.clone(),
                timeout,
                auto_approve,
                escalation,
            })
    });
    if let Some(n) = spec.max_extensions
        && n > 1000
    {
        errs.push("spec.maxExtensions", "must be at most 1000");
    }
    let active_hours = spec.active_hours.as_ref().and_then(|h| {
        ActiveWindow::parse(h)
            .map_err(|(field, msg)| errs.push(format!("spec.activeHours.{field}"), msg))
            .ok()
    });
    let ticket = spec.ticket.as_ref().and_then(|t| {
        if let Some(c) = &t.checker
            && !checker_name_ok(c)
        {
            errs.push(
                "spec.ticket.checker",
                "must be 1 to 63 letters, digits, '-', '_' or '.', not starting with '.'",
            );
        }
        regex::RegexBuilder::new(&t.pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                errs.push(
                    "spec.ticket.pattern",
                    format!("not a valid regular expression: {e}"),
                )
            })
            .ok()
            .map(|pattern| TicketRule {
                pattern,
                checker: t.checker.clone(),
            })
    });
    let watch = spec.watch.clone().unwrap_or_default();
    for (i, a) in watch.sensitive_actions.iter().enumerate() {
        if a.split('/').any(|seg| seg.trim().is_empty()) || !printable(a) {
            errs.push(
                format!("spec.watch.sensitiveActions[{i}]"),
                "must be an ARM action pattern: printable segments separated by '/', none empty \
                 (Microsoft.Storage/storageAccounts/listKeys/action, Microsoft.KeyVault/*)",
            );
        }
    }
    let sensitive_actions = if watch.sensitive_actions.is_empty() {
        crate::usage::DEFAULT_SENSITIVE_ACTIONS
            .iter()
            .map(|a| (*a).to_owned())
            .collect()
    } else {
        watch.sensitive_actions.clone()
    };
    let break_glass = spec.break_glass.as_ref().and_then(|b| {
        LeaseDuration::parse(&b.max_duration)
            .map_err(|e| errs.push("spec.breakGlass.maxDuration", e.to_string()))
            .ok()
    });
    match max_duration {
        Some(max_duration) if errs.is_empty() => Ok(PolicyRules {
            namespaces,
            namespace_selector: spec.namespace_selector.clone(),
            identities,
            service_principals,
            applications,
            roles,
            scopes,
            service_accounts,
            max_duration,
            justification_pattern,
            // Empty means the default: Entra's token exchange audience only.
            audiences: if spec.audiences.is_empty() {
                vec![DEFAULT_AUDIENCE.to_owned()]
            } else {
                spec.audiences.clone()
            },
            allow_privileged_identities: spec.allow_privileged_identities,
            locks: spec.locks,
            max_active_grants: spec.max_active_grants,
            approval,
            break_glass,
            close_federation_early: spec.federation.as_ref().is_some_and(|f| f.close_early),
            pim_expiry: spec
                .azure
                .as_ref()
                .is_some_and(|a| a.expiry == crate::v1alpha1::Expiry::Pim),
            max_extensions: spec.max_extensions,
            active_hours,
            ticket,
            sensitive_actions,
            on_sensitive_action: watch.on_sensitive_action,
        }),
        _ => Err(errs),
    }
}

/// A ticket checker's name is a Secret key and a file name: no path, no leading dot.
fn checker_name_ok(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn names_ok(field: &str, list: &[String], errs: &mut FieldErrors) -> bool {
    let mut ok = true;
    for (i, n) in list.iter().enumerate() {
        if n.trim().is_empty() || n.len() > MAX_USERNAME_LEN as usize || !printable(n) {
            errs.push(
                format!("{field}[{i}]"),
                format!("must be 1 to {MAX_USERNAME_LEN} printable characters"),
            );
            ok = false;
        }
    }
    ok
}

fn auto_approve_rules(
    rules: &[crate::v1alpha1::AutoApproveRule],
    errs: &mut FieldErrors,
) -> Option<Vec<AutoApprove>> {
    let before = errs.len();
    let out: Vec<AutoApprove> = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let field = format!("spec.approval.autoApprove[{i}]");
            let max_duration = LeaseDuration::parse(&r.max_duration)
                .map_err(|e| errs.push(format!("{field}.maxDuration"), e.to_string()))
                .ok();
            if r.roles.is_empty() {
                errs.push(
                    format!("{field}.roles"),
                    "must list at least one role: a rule for no role approves nothing",
                );
            }
            let roles: Vec<(String, RoleRef)> = r
                .roles
                .iter()
                .enumerate()
                .filter_map(|(j, w)| match RoleRef::parse(w) {
                    Ok(role) => Some((w.clone(), role)),
                    Err(e) => {
                        errs.push(format!("{field}.roles[{j}]"), e.to_string());
                        None
                    }
                })
                .collect();
            names_ok(
                &format!("{field}.requesterGroups"),
                &r.requester_groups,
                errs,
            );
            max_duration.map(|max_duration| AutoApprove {
                max_duration,
                roles,
                requester_groups: r.requester_groups.clone(),
            })
        })
        .collect();
    (errs.len() == before).then_some(out)
}

fn escalation_tiers(
    tiers: &[crate::v1alpha1::EscalationTier],
    errs: &mut FieldErrors,
) -> Option<Vec<EscalationTier>> {
    let before = errs.len();
    let out: Vec<EscalationTier> = tiers
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let field = format!("spec.approval.escalation[{i}]");
            if t.approvers.users.is_empty() && t.approvers.groups.is_empty() {
                errs.push(
                    format!("{field}.approvers"),
                    "must list at least one user or group",
                );
            }
            names_ok(
                &format!("{field}.approvers.users"),
                &t.approvers.users,
                errs,
            );
            names_ok(
                &format!("{field}.approvers.groups"),
                &t.approvers.groups,
                errs,
            );
            LeaseDuration::parse(&t.after)
                .map_err(|e| errs.push(format!("{field}.after"), e.to_string()))
                .ok()
                .map(|after| EscalationTier {
                    after,
                    users: t.approvers.users.clone(),
                    groups: t.approvers.groups.clone(),
                })
        })
        .collect();
    (errs.len() == before).then_some(out)
}

/// Does a label selector match these labels? An empty selector matches everything.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().all(|e| {
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| e.values.contains(v)),
                "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // Unknown operators never match: fail closed.
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests;
