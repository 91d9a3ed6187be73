//! `lapse-operator azure-role`: the Azure role assignments the operator's own identity needs for
//! a set of AccessPolicies, and no more.
//!
//! - **Role assignments**: *Role Based Access Control Administrator* at each scope the policies
//!   allow (a scope below another is covered by it unless a policy adds roles there), with an
//!   ABAC condition in Microsoft's "delegate Azure role assignment management with conditions"
//!   form ("Constrain roles and principal types"): it may create and delete assignments of the
//!   roles the policies name only, for service principals only.
//! - **Reading**: a custom role with `roleAssignments/read`, `roleDefinitions/read`,
//!   `locks/read`, `roleAssignmentSchedules/read`, `roleAssignmentScheduleInstances/read`,
//!   `userAssignedIdentities/read` and `permissions/read` at each subscription
//!   involved: the orphan sweep lists role assignments per subscription (and PIM's schedules),
//!   role names are looked up there, the management locks at a grant's scopes and identity are
//!   read before it activates,
//!   identities are read to find their principals (and listed at start-up to find orphaned
//!   FICs), and `check` reads the identity's own permissions.
//! - **Federated identity credentials**: a custom role with `userAssignedIdentities/read` and
//!   `federatedIdentityCredentials/read|write|delete` on the identities the policies let grants
//!   federate (the identity, or its resource group or subscription for a pattern). Not
//!   *Managed Identity Contributor*: that role also creates, changes and deletes the identities
//!   themselves, and deleting one ends every access of its workloads.
//! - **Usage evidence** (only for the logs the operator is told to read, `--usage-activity-log`
//!   and `--usage-sign-ins` as on `run`): `Microsoft.Insights/eventtypes/values/read` in the
//!   reader role at each subscription; the sign-in log is Microsoft Graph's (`AuditLog.Read.All`
//!   and an Entra ID P1 or P2 licence), which no Azure role gives: a note says so.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use lapse_api::arm::ArmId;
use lapse_api::role::{PRIVILEGED_BUILT_IN_ROLES, RoleCatalogue, RoleError};
use lapse_api::validate::validate_policy;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::policies::SourcedPolicy;

pub const ROLE_ASSIGNMENTS_READ: &str = "Microsoft.Authorization/roleAssignments/read";
pub const ROLE_ASSIGNMENTS_WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
pub const ROLE_ASSIGNMENTS_DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";
pub const ROLE_DEFINITIONS_READ: &str = "Microsoft.Authorization/roleDefinitions/read";
/// The management locks that apply at a grant's scopes and identity, read before activation.
pub const LOCKS_READ: &str = "Microsoft.Authorization/locks/read";
/// ARM's permissions API (what `check` and the start-up check call).
pub const PERMISSIONS_READ: &str = "Microsoft.Authorization/permissions/read";
/// PIM's active role assignment schedules, listed per subscription (lapse-azure's
/// `list_role_assignment_schedules`).
pub const PIM_SCHEDULES_READ: &str = "Microsoft.Authorization/roleAssignmentSchedules/read";
/// Requesting, moving and removing role assignments through PIM (`azure.expiry: PIM`).
pub const PIM_REQUESTS_WRITE: &str = "Microsoft.Authorization/roleAssignmentScheduleRequests/write";
/// The instances of those schedules.
pub const PIM_INSTANCES_READ: &str = "Microsoft.Authorization/roleAssignmentScheduleInstances/read";
pub const IDENTITY_READ: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/read";
/// Reading a subscription's Activity Log (usage evidence, `run --usage-activity-log`).
pub const ACTIVITY_LOG_READ: &str = "Microsoft.Insights/eventtypes/values/read";
pub const FIC_READ: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read";
pub const FIC_WRITE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write";
pub const FIC_DELETE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete";

/// Role Based Access Control Administrator (built-in).
pub const RBAC_ADMIN_NAME: &str = "Role Based Access Control Administrator";
pub const RBAC_ADMIN: Uuid = Uuid::from_u128(0xf58310d9_a9f6_439a_9e8d_f62e7b41a168);

/// The custom roles' names and their GUIDs (UUIDv5 of a fixed URL, so every run and every
/// cluster names the same definition).
pub const READER_ROLE: &str = "Lapse Operator Reader";
pub const FEDERATION_ROLE: &str = "Lapse Operator Federated Credentials";
pub const PIM_ROLE: &str = "Lapse Operator PIM Requests";

fn custom_role_guid(name: &str) -> Uuid {
    let slug = name.to_ascii_lowercase().replace(' ', "-");
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("https://lapse.dev/roles/{slug}").as_bytes(),
    )
}

#[derive(Debug, Args)]
pub struct AzureRoleArgs {
    /// AccessPolicy YAML: a directory (each *.yaml, *.yml and *.json in it), one file, or `-`
    /// for stdin. Multi-document files and `kind: List` are read; other kinds are skipped.
    #[arg(long, value_name = "DIR|FILE|-")]
    pub policies: String,

    /// `az` prints the Azure CLI commands to run (a shell script); `json` prints the role
    /// definitions and role assignments in ARM's request shapes.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Az)]
    pub output: Output,

    /// Object ID (principal ID) of the operator's identity, written into the output. Without
    /// it the commands read $LAPSE_OPERATOR_OBJECT_ID when run, and JSON leaves principalId out.
    #[arg(long, value_name = "OBJECT_ID")]
    pub assignee: Option<Uuid>,

    #[command(flatten)]
    pub usage: UsageLogs,
}

/// The usage logs the operator reads (`run`'s flags and variables of the same names): what
/// they need is asked for only when they are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Args)]
pub struct UsageLogs {
    /// The operator reads the Activity Log (`run --usage-activity-log`): plan
    /// Microsoft.Insights/eventtypes/values/read at each subscription
    #[arg(long, env = "LAPSE_USAGE_ACTIVITY_LOG")]
    pub usage_activity_log: bool,
    /// The operator reads the sign-in log (`run --usage-sign-ins`): say what Microsoft Graph
    /// needs (AuditLog.Read.All, Entra ID P1 or P2)
    #[arg(long, env = "LAPSE_USAGE_SIGN_INS")]
    pub usage_sign_ins: bool,
}

/// What reading the sign-in log needs, which no Azure role gives.
pub const SIGN_INS_NEEDS: &str = "the sign-in log (--usage-sign-ins) is Microsoft Graph's: give \
     the operator's service principal the Graph application permission AuditLog.Read.All (with \
     admin consent), and the tenant needs Microsoft Entra ID P1 or P2 (Graph refuses sign-ins \
     without it). No Azure role gives either.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Az,
    Json,
}

/// One Role Based Access Control Administrator assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminScope {
    pub scope: ArmId,
    /// The roles its condition allows, by GUID, with their names.
    pub roles: BTreeMap<Uuid, String>,
    /// The policies that allow this scope (or one above it).
    pub policies: BTreeSet<String>,
}

/// A custom role and the scopes it is assigned at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomRole {
    pub name: &'static str,
    pub guid: Uuid,
    pub description: &'static str,
    pub actions: Vec<&'static str>,
    /// Assigned at these scopes, each for these policies.
    pub scopes: Vec<(ArmId, BTreeSet<String>)>,
}

impl CustomRole {
    /// The subscriptions of its scopes: its assignable scopes.
    fn assignable_scopes(&self) -> Vec<String> {
        let subs: BTreeSet<String> = self
            .scopes
            .iter()
            .filter_map(|(s, _)| s.subscription())
            .map(|s| format!("/subscriptions/{s}"))
            .collect();
        subs.into_iter().collect()
    }
}

/// Actions the operator needs at one scope, and why (what `check` verifies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub scope: ArmId,
    pub actions: Vec<&'static str>,
    pub purpose: String,
}

/// What the operator's identity needs for a set of policies.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Names of the policies read (valid or not).
    pub policies: Vec<String>,
    /// Role Based Access Control Administrator assignments, covered scopes left out.
    pub admin: Vec<AdminScope>,
    /// Every scope the policies allow, covered or not (`check` looks at each).
    pub policy_scopes: Vec<AdminScope>,
    pub reader: Option<CustomRole>,
    pub federation: Option<CustomRole>,
    /// PIM schedule requests at the scopes of policies with `azure.expiry: PIM`.
    pub pim: Option<CustomRole>,
    /// What else to know (skipped scopes, Graph permissions for applications).
    pub notes: Vec<String>,
    /// The usage logs planned for.
    pub usage: UsageLogs,
    /// Why some policies or entries could not be planned, each naming the file, policy and
    /// field. `azure-role` refuses to print anything while there are any.
    pub problems: Vec<String>,
}

fn segments(s: &str) -> Vec<&str> {
    s.trim_matches('/').split('/').collect()
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Where the rights over the identities a glob names are assigned: the identity itself, or its
/// resource group or subscription when the glob leaves those open.
fn identity_scope(glob: &str) -> Result<Option<ArmId>, String> {
    let s = segments(glob.trim_end_matches('/'));
    let shaped = s.len() == 8
        && s[0].eq_ignore_ascii_case("subscriptions")
        && s[2].eq_ignore_ascii_case("resourceGroups")
        && s[4].eq_ignore_ascii_case("providers");
    let names_identities = shaped
        && (has_wildcard(s[5]) || s[5].eq_ignore_ascii_case("Microsoft.ManagedIdentity"))
        && (has_wildcard(s[6]) || s[6].eq_ignore_ascii_case("userAssignedIdentities"));
    if !names_identities {
        return Ok(None);
    }
    if has_wildcard(s[1]) {
        return Err(format!(
            "`{glob}` leaves the subscription open; Azure roles are given per subscription, so \
             list one pattern per subscription"
        ));
    }
    let text = if has_wildcard(s[3]) {
        format!("/{}/{}", s[0], s[1])
    } else if s[5..].iter().any(|x| has_wildcard(x)) {
        format!("/{}", s[..4].join("/"))
    } else {
        format!("/{}", s.join("/"))
    };
    ArmId::parse(&text).map(Some).map_err(|e| e.to_string())
}

/// Keeps the scopes no kept ancestor covers; `covers(ancestor, scope)` decides coverage.
fn uncovered<T: Clone>(
    mut items: Vec<(ArmId, T)>,
    covers: impl Fn(&T, &T) -> bool,
) -> Vec<(ArmId, T)> {
    // Ancestors first: an ancestor's key is a prefix of (so shorter than) its descendants'.
    items.sort_by(|a, b| {
        a.0.key()
            .len()
            .cmp(&b.0.key().len())
            .then_with(|| a.0.key().cmp(b.0.key()))
    });
    let mut kept: Vec<(ArmId, T)> = Vec::new();
    for (scope, value) in items {
        let covered = kept
            .iter()
            .filter(|(k, _)| scope.is_at_or_below(k))
            .any(|(_, v)| covers(v, &value));
        if !covered {
            kept.push((scope, value));
        }
    }
    kept
}

impl Plan {
    /// The plan without usage evidence.
    #[cfg(test)]
    pub fn build(policies: &[SourcedPolicy]) -> Plan {
        Self::build_with(policies, UsageLogs::default())
    }

    /// The plan, with what the usage logs the operator reads need.
    pub fn build_with(policies: &[SourcedPolicy], usage: UsageLogs) -> Plan {
        let catalogue = RoleCatalogue::builtin();
        let mut plan = Plan {
            policies: policies.iter().map(|p| p.name.clone()).collect(),
            usage,
            ..Plan::default()
        };
        // Every scope a policy allows, with the roles and policy names it brings there.
        let mut scopes: BTreeMap<String, AdminScope> = BTreeMap::new();
        let mut subscriptions: BTreeMap<String, (ArmId, BTreeSet<String>)> = BTreeMap::new();
        let mut federated: Vec<(ArmId, BTreeSet<String>)> = Vec::new();
        let mut any_identity = false;
        let mut applications = BTreeSet::new();
        let mut pim: Vec<(ArmId, BTreeSet<String>)> = Vec::new();
        for p in policies {
            let rules = match validate_policy(&p.spec) {
                Ok(r) => r,
                Err(errors) => {
                    for e in errors.0 {
                        plan.problems.push(format!("{}: {e}", p.label()));
                    }
                    continue;
                }
            };
            let mut roles = BTreeMap::new();
            for (i, (written, role)) in rules.roles.iter().enumerate() {
                match catalogue.resolve(role) {
                    Ok(r) => {
                        if PRIVILEGED_BUILT_IN_ROLES.contains(&r.guid) {
                            plan.notes.push(format!(
                                "{}: spec.roles[{i}] `{written}` can itself assign roles: the \
                                 condition lets the operator assign it, and whoever a grant gives \
                                 it to can assign any role at its scope",
                                p.label()
                            ));
                        }
                        roles.insert(r.guid, r.name.unwrap_or_else(|| r.guid.to_string()));
                    }
                    Err(RoleError::Unknown { .. }) => plan.problems.push(format!(
                        "{}: spec.roles[{i}]: `{written}` is not a built-in role name lapse knows; \
                         write its role definition GUID instead (az role definition list --name \
                         \"{written}\" --query \"[].name\" -o tsv)",
                        p.label()
                    )),
                    Err(e) => plan
                        .problems
                        .push(format!("{}: spec.roles[{i}]: {e}", p.label())),
                }
            }
            for (i, scope) in rules.scopes.iter().enumerate() {
                let Some(sub) = scope.subscription() else {
                    plan.notes.push(format!(
                        "{}: spec.scopes[{i}] `{scope}` is not in a subscription (a management \
                         group?): lapse creates nothing there, so no role is given there",
                        p.label()
                    ));
                    continue;
                };
                let entry = scopes
                    .entry(scope.key().to_owned())
                    .or_insert_with(|| AdminScope {
                        scope: scope.clone(),
                        roles: BTreeMap::new(),
                        policies: BTreeSet::new(),
                    });
                entry.roles.extend(roles.clone());
                entry.policies.insert(p.name.clone());
                add_subscription(&mut subscriptions, sub, &p.name);
            }
            if rules.pim_expiry {
                pim.extend(
                    rules
                        .scopes
                        .iter()
                        .filter(|s| s.subscription().is_some())
                        .map(|s| (s.clone(), BTreeSet::from([p.name.clone()]))),
                );
                plan.notes.push(format!(
                    "{}: azure.expiry: PIM requests role assignments through PIM, which the \
                     condition on the operator's role assignment rights does not restrict: at \
                     its scopes the operator can request any role through PIM. Keep such \
                     policies narrow (docs/security.md, \"Azure-enforced expiry\")",
                    p.label()
                ));
            }
            let federates = !rules.service_accounts.is_empty();
            for (i, glob) in p.spec.identities.iter().enumerate() {
                any_identity = true;
                match identity_scope(glob) {
                    Ok(Some(scope)) => {
                        if let Some(sub) = scope.subscription() {
                            add_subscription(&mut subscriptions, sub, &p.name);
                        }
                        if federates {
                            federated.push((scope, BTreeSet::from([p.name.clone()])));
                        }
                    }
                    Ok(None) => plan.notes.push(format!(
                        "{}: spec.identities[{i}] `{glob}` cannot match a user-assigned \
                         managed identity ID; nothing is given for it",
                        p.label()
                    )),
                    Err(e) => plan
                        .problems
                        .push(format!("{}: spec.identities[{i}]: {e}", p.label())),
                }
            }
            if federates && !rules.applications.is_empty() {
                applications.insert(p.name.clone());
            }
        }

        // A scope inherits the roles of every policy scope above it.
        let all: Vec<(ArmId, AdminScope)> = scopes
            .values()
            .map(|this| {
                let mut inherited = AdminScope {
                    scope: this.scope.clone(),
                    roles: BTreeMap::new(),
                    policies: BTreeSet::new(),
                };
                for anc in scopes
                    .values()
                    .filter(|a| this.scope.is_at_or_below(&a.scope))
                {
                    inherited.roles.extend(anc.roles.clone());
                    inherited.policies.extend(anc.policies.iter().cloned());
                }
                (this.scope.clone(), inherited)
            })
            .collect();
        plan.policy_scopes = all.iter().map(|(_, a)| a.clone()).collect();
        // Covered: an ancestor's assignment already allows every role this scope needs.
        plan.admin = uncovered(all, |anc, this| {
            this.roles.keys().all(|g| anc.roles.contains_key(g))
        })
        .into_iter()
        .map(|(_, a)| a)
        .collect();

        // Reading, at each subscription an admin assignment does not already cover (its
        // `*/read` includes every one of them).
        let reader_scopes: Vec<(ArmId, BTreeSet<String>)> = subscriptions
            .into_values()
            .filter(|(sub, _)| !plan.admin.iter().any(|a| a.scope == *sub))
            .collect();
        if !reader_scopes.is_empty() {
            let mut actions = vec![
                ROLE_ASSIGNMENTS_READ,
                ROLE_DEFINITIONS_READ,
                LOCKS_READ,
                PIM_SCHEDULES_READ,
                PIM_INSTANCES_READ,
            ];
            if any_identity {
                actions.push(IDENTITY_READ);
            }
            // The Activity Log, at each subscription, only when the operator reads it. One
            // action in this custom role rather than the built-in Monitoring Reader or Reader:
            // their `*/read` would also read every resource's configuration. Where the RBAC
            // Administrator assignment sits at the subscription, its `*/read` includes it.
            if usage.usage_activity_log {
                actions.push(ACTIVITY_LOG_READ);
            }
            // Not needed to run, but to see what it may do (`check`, the start-up check).
            actions.push(PERMISSIONS_READ);
            plan.reader = Some(CustomRole {
                name: READER_ROLE,
                guid: custom_role_guid(READER_ROLE),
                description: "lapse-operator: list role assignments (the orphan sweep) and PIM's \
                              role assignment schedules, read role definitions, management locks \
                              and user-assigned identities, and its own permissions.",
                actions,
                scopes: reader_scopes,
            });
        }
        let federated = uncovered(federated, |_, _| true);
        if !federated.is_empty() {
            plan.federation = Some(CustomRole {
                name: FEDERATION_ROLE,
                guid: custom_role_guid(FEDERATION_ROLE),
                description: "lapse-operator: create and delete federated identity credentials \
                              on user-assigned identities (not the identities themselves).",
                actions: vec![IDENTITY_READ, FIC_READ, FIC_WRITE, FIC_DELETE],
                scopes: federated,
            });
        }
        let pim = uncovered(pim, |_, _| true);
        if !pim.is_empty() {
            plan.pim = Some(CustomRole {
                name: PIM_ROLE,
                guid: custom_role_guid(PIM_ROLE),
                description: "lapse-operator: request, extend and remove role assignments \
                              through PIM schedule requests with an end Azure enforces \
                              (AccessPolicies with azure.expiry: PIM), and read the schedules.",
                actions: vec![PIM_REQUESTS_WRITE, PIM_SCHEDULES_READ, PIM_INSTANCES_READ],
                scopes: pim,
            });
        }
        if usage.usage_activity_log {
            plan.notes.push(format!(
                "the Activity Log (--usage-activity-log): {ACTIVITY_LOG_READ} is in {READER_ROLE} \
                 at each subscription (where {RBAC_ADMIN_NAME} is assigned at the subscription, \
                 its */read includes it)"
            ));
        }
        if usage.usage_sign_ins {
            plan.notes.push(SIGN_INS_NEEDS.to_owned());
        }
        if !applications.is_empty() {
            plan.notes.push(format!(
                "AccessPolicies {} let grants federate app registrations: that is Microsoft \
                 Graph, not Azure RBAC. Give the operator's service principal the Graph \
                 application permission Application.ReadWrite.OwnedBy and make it an owner of \
                 each application (or grant Application.ReadWrite.All).",
                applications.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        plan
    }

    /// What `check` verifies: role assignment rights at every policy scope, reading at each
    /// subscription, FIC rights on each federated identity scope.
    pub fn requirements(&self) -> Vec<Requirement> {
        let mut out = Vec::new();
        let names = |p: &BTreeSet<String>| p.iter().cloned().collect::<Vec<_>>().join(", ");
        for s in &self.policy_scopes {
            out.push(Requirement {
                scope: s.scope.clone(),
                actions: vec![
                    ROLE_ASSIGNMENTS_READ,
                    ROLE_ASSIGNMENTS_WRITE,
                    ROLE_ASSIGNMENTS_DELETE,
                ],
                purpose: format!(
                    "create and delete the role assignments grants ask for (AccessPolicy {})",
                    names(&s.policies)
                ),
            });
        }
        let mut subs: BTreeMap<String, (ArmId, BTreeSet<String>)> = BTreeMap::new();
        for s in &self.policy_scopes {
            if let Some(sub) = s.scope.subscription() {
                for p in &s.policies {
                    add_subscription(&mut subs, sub, p);
                }
            }
        }
        for role in self.reader.iter().chain(self.federation.iter()) {
            for (scope, policies) in &role.scopes {
                if let Some(sub) = scope.subscription() {
                    for p in policies {
                        add_subscription(&mut subs, sub, p);
                    }
                }
            }
        }
        // What the operator needs to run (not `permissions/read`: without it the check itself
        // says so, as an answer ARM refused).
        let reader_actions: Vec<&'static str> = self
            .reader
            .as_ref()
            .map(|r| r.actions.clone())
            .unwrap_or_else(|| {
                let mut actions = vec![
                    ROLE_ASSIGNMENTS_READ,
                    ROLE_DEFINITIONS_READ,
                    LOCKS_READ,
                    PIM_SCHEDULES_READ,
                    PIM_INSTANCES_READ,
                ];
                if self.usage.usage_activity_log {
                    actions.push(ACTIVITY_LOG_READ);
                }
                actions
            })
            .into_iter()
            .filter(|a| *a != PERMISSIONS_READ)
            .collect();
        for (sub, policies) in subs.into_values() {
            out.push(Requirement {
                scope: sub,
                actions: reader_actions.clone(),
                purpose: format!(
                    "list role assignments for the orphan sweep, read role definitions and \
                     identities (AccessPolicy {})",
                    names(&policies)
                ),
            });
        }
        if let Some(f) = &self.federation {
            for (scope, policies) in &f.scopes {
                out.push(Requirement {
                    scope: scope.clone(),
                    actions: f.actions.clone(),
                    purpose: format!(
                        "create and delete federated identity credentials (AccessPolicy {})",
                        names(policies)
                    ),
                });
            }
        }
        if let Some(r) = &self.pim {
            for (scope, policies) in &r.scopes {
                out.push(Requirement {
                    scope: scope.clone(),
                    actions: r.actions.clone(),
                    purpose: format!(
                        "request role assignments through PIM (azure.expiry: PIM; AccessPolicy {})",
                        names(policies)
                    ),
                });
            }
        }
        out
    }
}

fn add_subscription(
    subs: &mut BTreeMap<String, (ArmId, BTreeSet<String>)>,
    sub: &str,
    policy: &str,
) {
    let key = sub.to_ascii_lowercase();
    if let Some((_, p)) = subs.get_mut(&key) {
        p.insert(policy.to_owned());
        return;
    }
    if let Ok(id) = ArmId::parse(&format!("/subscriptions/{sub}")) {
        subs.insert(key, (id, BTreeSet::from([policy.to_owned()])));
    }
}

/// The ABAC condition on the operator's Role Based Access Control Administrator assignment, in
/// the form of Microsoft's "Constrain roles and principal types" example: writes only of these
/// role definitions, to service principals; deletes only of assignments of these role
/// definitions, of service principals. Every other action the role grants (its `*/read`) is
/// not constrained.
pub fn condition<'a>(roles: impl IntoIterator<Item = &'a Uuid>) -> String {
    let guids: Vec<String> = roles.into_iter().map(Uuid::to_string).collect();
    let guids = guids.join(", ");
    let side = |action: &str, source: &str| {
        format!(
            "((!(ActionMatches{{'{action}'}})) OR (@{source}[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{guids}}} AND @{source}[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {{'ServicePrincipal'}}))"
        )
    };
    format!(
        "{} AND {}",
        side(ROLE_ASSIGNMENTS_WRITE, "Request"),
        side(ROLE_ASSIGNMENTS_DELETE, "Resource")
    )
}

/// `/subscriptions/<s>/providers/Microsoft.Authorization/roleDefinitions/<guid>` for a scope.
fn definition_id(scope: &ArmId, guid: &Uuid) -> String {
    lapse_api::role::role_definition_id(scope.subscription().unwrap_or_default(), guid)
}

fn role_names(roles: &BTreeMap<Uuid, String>) -> String {
    roles.values().cloned().collect::<Vec<_>>().join(", ")
}

fn policy_names(p: &BTreeSet<String>) -> String {
    p.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Single-quotes a word for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Plan {
    /// The plan as ARM request bodies: role definitions to PUT, role assignments to PUT.
    pub fn to_json(&self, assignee: Option<&Uuid>) -> Value {
        let mut definitions = Vec::new();
        let mut assignments = Vec::new();
        let principal = |props: &mut Value| {
            if let Some(a) = assignee {
                props["principalId"] = json!(a.to_string());
            }
        };
        for a in &self.admin {
            let mut props = json!({
                "roleDefinitionId": definition_id(&a.scope, &RBAC_ADMIN),
                "principalType": "ServicePrincipal",
                "description": format!("lapse-operator: assign {} (AccessPolicy {})", role_names(&a.roles), policy_names(&a.policies)),
                "condition": condition(a.roles.keys()),
                "conditionVersion": "2.0",
            });
            principal(&mut props);
            assignments.push(json!({
                "scope": a.scope.as_str(),
                "roleName": RBAC_ADMIN_NAME,
                "conditionRoles": a.roles.iter().map(|(g, n)| json!({"id": g.to_string(), "roleName": n})).collect::<Vec<_>>(),
                "policies": a.policies,
                "properties": props,
            }));
        }
        for role in self
            .reader
            .iter()
            .chain(self.federation.iter())
            .chain(self.pim.iter())
        {
            definitions.push(json!({
                "name": role.guid.to_string(),
                "properties": {
                    "roleName": role.name,
                    "description": role.description,
                    "type": "CustomRole",
                    "permissions": [{"actions": role.actions, "notActions": [], "dataActions": [], "notDataActions": []}],
                    "assignableScopes": role.assignable_scopes(),
                }
            }));
            for (scope, policies) in &role.scopes {
                let mut props = json!({
                    "roleDefinitionId": definition_id(scope, &role.guid),
                    "principalType": "ServicePrincipal",
                    "description": format!("lapse-operator: {} (AccessPolicy {})", role.name, policy_names(policies)),
                });
                principal(&mut props);
                assignments.push(json!({
                    "scope": scope.as_str(),
                    "roleName": role.name,
                    "policies": policies,
                    "properties": props,
                }));
            }
        }
        json!({
            "policies": self.policies,
            "roleDefinitions": definitions,
            "roleAssignments": assignments,
            "notes": self.notes,
        })
    }

    /// The plan as a shell script of `az` commands.
    pub fn to_az(&self, source: &str, assignee: Option<&Uuid>) -> String {
        let mut o = String::new();
        let who = match assignee {
            Some(a) => a.to_string(),
            None => "$LAPSE_OPERATOR_OBJECT_ID".to_owned(),
        };
        let line = |o: &mut String, s: &str| {
            o.push_str(s);
            o.push('\n');
        };
        line(&mut o, "#!/bin/sh");
        line(
            &mut o,
            &format!(
                "# The Azure roles of lapse-operator's own identity for {} AccessPolic{} ({}) in {source},",
                self.policies.len(),
                if self.policies.len() == 1 { "y" } else { "ies" },
                self.policies.join(", ")
            ),
        );
        line(
            &mut o,
            "# written by `lapse-operator azure-role`. Run it as someone who may assign roles at these",
        );
        line(
            &mut o,
            "# scopes (Owner or User Access Administrator); check the result with `lapse-operator check`.",
        );
        line(&mut o, "set -eu");
        if assignee.is_none() {
            line(
                &mut o,
                ": \"${LAPSE_OPERATOR_OBJECT_ID:?set it to the object (principal) ID of lapse-operator's identity}\"",
            );
        }
        let assign = |o: &mut String,
                      role: &str,
                      scope: &ArmId,
                      description: &str,
                      condition: bool| {
            o.push_str(&format!(
                "az role assignment create --assignee-object-id \"{who}\" --assignee-principal-type ServicePrincipal \\\n  --role {} --scope {} \\\n  --description {}",
                sh(role),
                sh(scope.as_str()),
                sh(description)
            ));
            if condition {
                o.push_str(" \\\n  --condition \"$condition\" --condition-version 2.0");
            }
            o.push('\n');
        };
        if !self.admin.is_empty() {
            line(&mut o, "");
            line(
                &mut o,
                &format!("# 1. Role assignments: {RBAC_ADMIN_NAME} at each scope the policies"),
            );
            line(
                &mut o,
                "#    allow, with an ABAC condition: it may create and delete assignments of the roles the",
            );
            line(
                &mut o,
                "#    policies name only, and only for service principals (the identities lapse grants to).",
            );
        }
        for a in &self.admin {
            line(&mut o, "");
            line(
                &mut o,
                &format!(
                    "# {}: {} (AccessPolicy {})",
                    a.scope,
                    role_names(&a.roles),
                    policy_names(&a.policies)
                ),
            );
            line(&mut o, "condition=$(cat <<'CONDITION'");
            line(&mut o, &condition(a.roles.keys()));
            line(&mut o, "CONDITION");
            line(&mut o, ")");
            assign(
                &mut o,
                &RBAC_ADMIN.to_string(),
                &a.scope,
                &format!(
                    "lapse-operator: assign {} (AccessPolicy {})",
                    role_names(&a.roles),
                    policy_names(&a.policies)
                ),
                true,
            );
        }
        let sections = [
            (
                &self.reader,
                "2. Reading, at each subscription: role assignments (the orphan sweep lists them per\n#    subscription) and PIM's role assignment schedules, role definitions (custom role names),\n#    user-assigned identities, and the identity's own permissions (for `lapse-operator check`).",
            ),
            (
                &self.federation,
                "3. Federated identity credentials on the identities the policies let grants federate: a\n#    custom role with just those actions. Not Managed Identity Contributor, which can also\n#    create, change and delete the identities themselves.",
            ),
            (
                &self.pim,
                "4. PIM schedule requests at the scopes of policies with azure.expiry: PIM (Azure removes\n#    each assignment at its end itself). The condition in 1. does not apply to them.",
            ),
        ];
        for (role, heading) in sections {
            let Some(role) = role else { continue };
            line(&mut o, "");
            line(&mut o, &format!("# {heading}"));
            // The Azure CLI's role definition format, keys in its documented order.
            let definition = format!(
                "{{\"Name\": {}, \"IsCustom\": true, \"Description\": {}, \"Actions\": {}, \"NotActions\": [], \"DataActions\": [], \"NotDataActions\": [], \"AssignableScopes\": {}}}",
                json!(role.name),
                json!(role.description),
                json!(role.actions),
                json!(role.assignable_scopes()),
            );
            line(
                &mut o,
                "# (Already defined? `az role definition update` with the same JSON.)",
            );
            line(
                &mut o,
                &format!(
                    "az role definition create --role-definition {}",
                    sh(&definition)
                ),
            );
            for (scope, policies) in &role.scopes {
                assign(
                    &mut o,
                    role.name,
                    scope,
                    &format!(
                        "lapse-operator: {} (AccessPolicy {})",
                        role.name,
                        policy_names(policies)
                    ),
                    false,
                );
            }
        }
        for note in &self.notes {
            line(&mut o, "");
            line(&mut o, &format!("# Note: {note}"));
        }
        o
    }
}

/// `lapse-operator azure-role`.
pub fn run(args: &AzureRoleArgs) -> anyhow::Result<()> {
    let policies = crate::policies::from_arg(&args.policies)?;
    let plan = Plan::build_with(&policies, args.usage);
    if !plan.problems.is_empty() {
        bail!(
            "cannot work out the operator's Azure roles from {}:\n  {}",
            args.policies,
            plan.problems.join("\n  ")
        );
    }
    let text = match args.output {
        Output::Az => plan.to_az(&args.policies, args.assignee.as_ref()),
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&plan.to_json(args.assignee.as_ref()))
                .context("rendering JSON")?;
            s.push('\n');
            s
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-4000-8000-00000000a001";

    fn rg(name: &str) -> String {
        format!("/subscriptions/{SUB}/resourceGroups/{name}")
    }

    fn mi(group: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            rg(group)
        )
    }

    fn policy(
        name: &str,
        roles: &[&str],
        scopes: &[String],
        identities: &[String],
        sas: &[&str],
    ) -> SourcedPolicy {
        let yaml = format!(
            "apiVersion: lapse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [demo]\n  identities: {}\n  roles: {}\n  scopes: {}\n  serviceAccounts: {}\n  maxDuration: 1h\n",
            serde_json::to_string(identities).unwrap(),
            serde_json::to_string(roles).unwrap(),
            serde_json::to_string(scopes).unwrap(),
            serde_json::to_string(sas).unwrap(),
        );
        crate::policies::parse(&format!("{name}.yaml"), &yaml)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn pim_policies_get_schedule_requests_at_their_scopes_and_a_warning() {
        let plain = policy("plain", &["Reader"], &[rg("app")], &[mi("app", "a")], &[]);
        assert!(Plan::build(std::slice::from_ref(&plain)).pim.is_none());
        let mut pim = policy("pim", &["Reader"], &[rg("app")], &[mi("app", "a")], &[]);
        pim.spec.azure = Some(lapse_api::v1alpha1::AzureRules {
            expiry: lapse_api::v1alpha1::Expiry::Pim,
        });
        let plan = Plan::build(&[plain, pim]);
        let role = plan.pim.as_ref().expect("a PIM role");
        assert_eq!(role.name, PIM_ROLE);
        assert!(role.actions.contains(&PIM_REQUESTS_WRITE));
        let scopes: Vec<String> = role.scopes.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(scopes, [rg("app")]);
        assert!(plan.notes.iter().any(|n| n.contains("azure.expiry: PIM")));
        let required = plan.requirements();
        assert!(
            required.iter().any(
                |r| r.actions.contains(&PIM_REQUESTS_WRITE) && r.scope.to_string() == rg("app")
            )
        );
        let json = plan.to_json(None);
        assert!(json.to_string().contains(PIM_ROLE));
    }

    const READER: Uuid = Uuid::from_u128(0xacdd72a7_3385_48ef_bd42_f606fba81ae7);
    const BLOB_READER: Uuid = Uuid::from_u128(0x2a2b9908_6ea1_4ae2_8e65_a410df84e7d1);

    #[test]
    fn the_condition_is_microsofts_constrain_roles_and_principal_types_form() {
        assert_eq!(
            condition([&READER, &BLOB_READER]),
            "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR \
             (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] \
             ForAnyOfAnyValues:GuidEquals {acdd72a7-3385-48ef-bd42-f606fba81ae7, \
             2a2b9908-6ea1-4ae2-8e65-a410df84e7d1} AND \
             @Request[Microsoft.Authorization/roleAssignments:PrincipalType] \
             ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'})) AND \
             ((!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})) OR \
             (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] \
             ForAnyOfAnyValues:GuidEquals {acdd72a7-3385-48ef-bd42-f606fba81ae7, \
             2a2b9908-6ea1-4ae2-8e65-a410df84e7d1} AND \
             @Resource[Microsoft.Authorization/roleAssignments:PrincipalType] \
             ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}))"
        );
    }

    #[test]
    fn scopes_are_deduplicated_and_covered_unless_a_policy_adds_roles_below() {
        let account = format!(
            "{}/providers/Microsoft.Storage/storageAccounts/data",
            rg("app")
        );
        let plan = Plan::build(&[
            policy(
                "wide",
                &["Reader"],
                &[rg("app"), rg("APP")],
                &[mi("app", "a")],
                &[],
            ),
            // Same roles below: covered. More roles below: its own assignment.
            policy(
                "same",
                &["reader"],
                std::slice::from_ref(&account),
                &[mi("app", "a")],
                &[],
            ),
            policy(
                "more",
                &["Storage Blob Data Reader"],
                std::slice::from_ref(&account),
                &[mi("app", "a")],
                &[],
            ),
            policy(
                "other",
                &[&READER.to_string()],
                &[rg("other")],
                &[mi("app", "a")],
                &[],
            ),
        ]);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let admin: Vec<(String, Vec<Uuid>)> = plan
            .admin
            .iter()
            .map(|a| (a.scope.to_string(), a.roles.keys().copied().collect()))
            .collect();
        assert_eq!(
            admin,
            [
                (rg("app"), vec![READER]),
                (rg("other"), vec![READER]),
                // GUID order: 2a2b9908… before acdd72a7….
                (account.clone(), vec![BLOB_READER, READER]),
            ]
        );
        let at_account = &plan.admin[2];
        assert_eq!(
            at_account.policies.iter().collect::<Vec<_>>(),
            ["more", "same", "wide"]
        );
        // check looks at every distinct policy scope, covered ones included.
        assert_eq!(plan.policy_scopes.len(), 3);
        // One subscription to read in; no federation without serviceAccounts.
        let reader = plan.reader.as_ref().unwrap();
        assert_eq!(reader.scopes.len(), 1);
        assert_eq!(
            reader.actions,
            [
                ROLE_ASSIGNMENTS_READ,
                ROLE_DEFINITIONS_READ,
                LOCKS_READ,
                PIM_SCHEDULES_READ,
                PIM_INSTANCES_READ,
                IDENTITY_READ,
                PERMISSIONS_READ
            ]
        );
        assert!(plan.federation.is_none());
    }

    #[test]
    fn federation_rights_go_to_the_identity_or_the_group_or_subscription_a_pattern_leaves_open() {
        let plan = Plan::build(&[
            policy(
                "one",
                &["Reader"],
                &[rg("app")],
                &[mi("app", "a"), mi("app", "b")],
                &["runner"],
            ),
            policy(
                "group",
                &["Reader"],
                &[rg("app")],
                &[mi("ops", "*")],
                &["runner"],
            ),
            // Under the group pattern: covered.
            policy(
                "inside",
                &["Reader"],
                &[rg("app")],
                &[mi("ops", "x")],
                &["runner"],
            ),
            policy(
                "anywhere",
                &["Reader"],
                &[rg("app")],
                &[format!(
                    "/subscriptions/{SUB}/resourceGroups/team-*/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"
                )],
                &["runner"],
            ),
            // No federation: nothing to write.
            policy("plain", &["Reader"], &[rg("app")], &[mi("quiet", "q")], &[]),
        ]);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let fed = plan.federation.as_ref().unwrap();
        let scopes: Vec<String> = fed.scopes.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(
            scopes,
            [format!("/subscriptions/{SUB}")],
            "the subscription-wide pattern covers the rest"
        );
        assert_eq!(
            fed.actions,
            [IDENTITY_READ, FIC_READ, FIC_WRITE, FIC_DELETE]
        );
        let plan = Plan::build(&[
            policy(
                "one",
                &["Reader"],
                &[rg("app")],
                &[mi("app", "a"), mi("app", "b")],
                &["runner"],
            ),
            policy(
                "group",
                &["Reader"],
                &[rg("app")],
                &[mi("ops", "*")],
                &["runner"],
            ),
            policy(
                "inside",
                &["Reader"],
                &[rg("app")],
                &[mi("ops", "x")],
                &["runner"],
            ),
        ]);
        let scopes: Vec<String> = plan
            .federation
            .unwrap()
            .scopes
            .iter()
            .map(|(s, _)| s.to_string())
            .collect();
        assert_eq!(scopes, [rg("ops"), mi("app", "a"), mi("app", "b")]);
    }

    #[test]
    fn problems_name_the_file_policy_and_field() {
        let plan = Plan::build(&[
            policy("custom", &["Reader", "Blob Backup Operator"], &[rg("app")], &[mi("app", "a")], &[]),
            policy("open", &["Reader"], &[rg("app")], &["/subscriptions/*/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x".into()], &["a"]),
            policy("broken", &["Reader"], &["not-an-id".into()], &[mi("app", "a")], &[]),
        ]);
        assert_eq!(plan.problems.len(), 3, "{:#?}", plan.problems);
        assert!(plan.problems[0].starts_with(
            "custom.yaml: AccessPolicy custom: spec.roles[1]: `Blob Backup Operator` is not a built-in role name lapse knows; write its role definition GUID instead"
        ), "{}", plan.problems[0]);
        assert!(
            plan.problems[1].starts_with(
                "open.yaml: AccessPolicy open: spec.identities[0]: `/subscriptions/*/"
            ),
            "{}",
            plan.problems[1]
        );
        assert!(
            plan.problems[2].starts_with("broken.yaml: AccessPolicy broken: spec.scopes[0]: "),
            "{}",
            plan.problems[2]
        );
    }

    #[test]
    fn a_privileged_role_in_a_policy_is_noted() {
        let plan = Plan::build(&[policy(
            "admins",
            &["Reader", "Owner"],
            &[rg("app")],
            &[mi("app", "a")],
            &[],
        )]);
        assert!(plan.problems.is_empty());
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(
            plan.notes[0].starts_with(
                "admins.yaml: AccessPolicy admins: spec.roles[1] `Owner` can itself assign roles"
            ),
            "{}",
            plan.notes[0]
        );
        assert!(plan.to_az("p", None).contains("# Note: admins.yaml"));
    }

    #[test]
    fn requirements_cover_every_policy_scope_subscription_and_federated_identity() {
        let plan = Plan::build(&[policy(
            "demo",
            &["Reader"],
            &[rg("app")],
            &[mi("app", "a")],
            &["runner"],
        )]);
        let reqs: Vec<(String, usize)> = plan
            .requirements()
            .iter()
            .map(|r| (r.scope.to_string(), r.actions.len()))
            .collect();
        assert_eq!(
            reqs,
            [
                (rg("app"), 3),
                // Role assignments, definitions, locks, PIM's schedules and instances,
                // identities (not `permissions/read`: `check` reports its absence itself).
                (format!("/subscriptions/{SUB}"), 6),
                (mi("app", "a"), 4)
            ]
        );
    }

    #[test]
    fn usage_logs_are_planned_only_when_the_operator_reads_them() {
        let policies = [policy(
            "demo",
            &["Reader"],
            &[rg("app")],
            &[mi("app", "a")],
            &["runner"],
        )];
        let off = Plan::build(&policies);
        let actions = |p: &Plan| {
            p.reader
                .as_ref()
                .map(|r| r.actions.clone())
                .unwrap_or_default()
        };
        assert!(!actions(&off).contains(&ACTIVITY_LOG_READ));
        assert!(!off.to_az("p", None).contains("AuditLog.Read.All"));
        let reader_req = |p: &Plan| {
            p.requirements()
                .into_iter()
                .find(|r| r.scope.as_str() == format!("/subscriptions/{SUB}"))
                .map(|r| r.actions)
                .unwrap_or_default()
        };
        assert!(!reader_req(&off).contains(&ACTIVITY_LOG_READ));

        let activity = Plan::build_with(
            &policies,
            UsageLogs {
                usage_activity_log: true,
                usage_sign_ins: false,
            },
        );
        assert!(actions(&activity).contains(&ACTIVITY_LOG_READ));
        // `check` verifies it at the subscription.
        assert!(reader_req(&activity).contains(&ACTIVITY_LOG_READ));
        let az = activity.to_az("p", None);
        assert!(
            az.contains("\"Microsoft.Insights/eventtypes/values/read\""),
            "in the role definition: {az}"
        );
        assert!(!az.contains("AuditLog.Read.All"), "{az}");

        let sign_ins = Plan::build_with(
            &policies,
            UsageLogs {
                usage_activity_log: false,
                usage_sign_ins: true,
            },
        );
        assert!(!actions(&sign_ins).contains(&ACTIVITY_LOG_READ));
        let az = sign_ins.to_az("p", None);
        assert!(
            az.contains("# Note: the sign-in log (--usage-sign-ins)")
                && az.contains("AuditLog.Read.All")
                && az.contains("P1 or P2"),
            "{az}"
        );
        assert!(
            sign_ins.to_json(None)["notes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n.as_str() == Some(SIGN_INS_NEEDS))),
        );
    }

    #[test]
    fn outputs_carry_the_condition_the_roles_and_the_assignee() {
        let plan = Plan::build(&[policy(
            "demo",
            &["Reader"],
            &[rg("app")],
            &[mi("app", "a")],
            &["runner"],
        )]);
        let who = Uuid::from_u128(7);
        let v = plan.to_json(Some(&who));
        let ras = v["roleAssignments"].as_array().unwrap();
        assert_eq!(ras.len(), 3);
        assert_eq!(ras[0]["properties"]["condition"], condition([&READER]));
        assert_eq!(ras[0]["properties"]["conditionVersion"], "2.0");
        assert_eq!(ras[0]["properties"]["principalId"], who.to_string());
        assert_eq!(
            ras[0]["properties"]["roleDefinitionId"],
            format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{RBAC_ADMIN}"
            )
        );
        let defs = v["roleDefinitions"].as_array().unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[1]["properties"]["roleName"], FEDERATION_ROLE);
        assert_eq!(
            defs[1]["properties"]["assignableScopes"],
            json!([format!("/subscriptions/{SUB}")])
        );
        assert_eq!(
            ras[2]["properties"]["roleDefinitionId"],
            format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{}",
                defs[1]["name"].as_str().unwrap()
            )
        );

        let az = plan.to_az("policies/", None);
        assert!(az.contains(": \"${LAPSE_OPERATOR_OBJECT_ID:?"), "{az}");
        assert!(
            az.contains(&format!("{}\nCONDITION\n", condition([&READER]))),
            "{az}"
        );
        assert!(
            az.contains("--condition \"$condition\" --condition-version 2.0"),
            "{az}"
        );
        assert!(
            az.contains(&format!("--role '{RBAC_ADMIN}' --scope '{}'", rg("app"))),
            "{az}"
        );
        assert!(
            az.contains("--role 'Lapse Operator Federated Credentials'"),
            "{az}"
        );
        assert!(
            az.contains("az role definition create --role-definition '{\"Name\": \"Lapse Operator Reader\", \"IsCustom\": true,"),
            "{az}"
        );
        assert_eq!(sh("it's"), "'it'\\''s'");
    }
}
