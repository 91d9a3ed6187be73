//! The simulated tenant: directory principals, subscriptions, resource groups, resources,
//! user-assigned identities with their FICs, applications, role definitions and role
//! assignments. Everything here is synchronous and guarded by one mutex in the server.

mod assignments;
mod locks;
mod pim;
mod seeding;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api_error::ApiError;
use crate::ids::{self, key};
use crate::{abac, rbac};

pub(crate) use assignments::{
    AssignmentFilter, AssignmentInput, AssignmentLimits, Rendered, arm_time, assignment_json,
    role_definition_json,
};
pub use locks::LockLevel;
pub(crate) use locks::{LockListing, LockedOp, MgmtLock};
pub(crate) use pim::RequestInput;
pub(crate) use seeding::lock_name_ok;

/// The outcome of an RBAC check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Allowed,
    /// No role assignment grants the action.
    Denied,
    /// Only assignments with ABAC conditions grant it, and none of their conditions holds.
    ConditionNotFulfilled,
}

/// Kind of directory principal (the `principalType` of role assignments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PrincipalKind {
    /// An application's or managed identity's service principal.
    #[default]
    ServicePrincipal,
    /// A user.
    User,
    /// A security group.
    Group,
}

impl PrincipalKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ServicePrincipal => "ServicePrincipal",
            Self::User => "User",
            Self::Group => "Group",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub object_id: String,
    pub app_id: Option<String>,
    pub display_name: String,
    pub kind: PrincipalKind,
    pub client_secret: Option<String>,
    /// When it was created; `None` for seeded principals (fully replicated).
    pub created: Option<Instant>,
    /// ARM ID of the user-assigned identity this principal belongs to.
    pub identity_id: Option<String>,
    /// Object ID of the application (app registration) this service principal instantiates.
    pub application_id: Option<String>,
    /// Microsoft Graph application permissions granted to it (e.g. `Application.ReadWrite.All`).
    pub graph_roles: Vec<String>,
}

/// A federated identity credential on an application (Microsoft Graph).
#[derive(Debug, Clone)]
pub(crate) struct GraphFic {
    pub id: String,
    /// When it was last written (see `Fic::written`).
    pub written: Instant,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub description: Option<String>,
}

/// An application (app registration).
#[derive(Debug, Clone)]
pub(crate) struct Application {
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    /// Object IDs of its owners.
    pub owners: Vec<String>,
    pub fics: BTreeMap<String, GraphFic>,
    /// Client secrets (`passwordCredentials`), metadata only.
    pub password_credentials: Vec<AppCredential>,
    /// Certificates (`keyCredentials`).
    pub key_credentials: Vec<AppCredential>,
}

/// A client secret or certificate of an application, as Graph describes it (never its value).
#[derive(Debug, Clone)]
pub(crate) struct AppCredential {
    pub key_id: String,
    pub display_name: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The first three characters of a secret (`hint`); `None` for certificates.
    pub hint: Option<String>,
    /// A certificate's thumbprint, base64 (`customKeyIdentifier`); `None` for secrets.
    pub custom_key_identifier: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct RoleDef {
    pub id: String,
    pub name: String,
    pub description: String,
    pub built_in: bool,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
    pub assignable_scopes: Vec<String>,
    /// `createdOn` / `updatedOn` as ARM renders them (built-ins: the dates Azure shows).
    pub created_on: String,
    pub updated_on: String,
    /// Object ID of who wrote it; `None` for built-in and seeded roles.
    pub created_by: Option<String>,
    pub updated_by: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    pub name: String,
    pub scope: String,
    pub role_definition_guid: String,
    pub principal_id: String,
    pub principal_type: String,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
    pub created_on: DateTime<Utc>,
    pub updated_on: DateTime<Utc>,
    /// Object ID of the caller who created it; `None` when seeded.
    pub created_by: Option<String>,
    /// Object ID of the caller who last wrote it; `None` when seeded.
    pub updated_by: Option<String>,
    /// When it was created (for propagation); `None` when seeded.
    pub created: Option<Instant>,
}

/// What deleting a scope took with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeDeletion {
    /// Resources (storage accounts, key vaults, ...) deleted.
    pub resources: usize,
    /// User-assigned identities deleted, with their service principals and FICs.
    pub identities: usize,
    /// Role assignments at or below the scope, deleted with it.
    pub role_assignments: usize,
}

/// A role assignment as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignmentView {
    /// Assignment name (GUID).
    pub name: String,
    /// Scope it was created at.
    pub scope: String,
    /// Role definition GUID.
    pub role_definition_guid: String,
    /// Principal object ID.
    pub principal_id: String,
    /// `principalType`.
    pub principal_type: String,
    /// `description`, if any.
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Fic {
    pub name: String,
    /// When it was last written: token exchange honours it after the FIC propagation delay.
    pub written: Instant,
    pub issuer: String,
    pub subject: Option<String>,
    pub audiences: Vec<String>,
    pub claims_matching_expression: Option<Value>,
}

impl From<&GraphFic> for Fic {
    /// An application's FIC as token exchange matches it (an exact subject, no expression).
    fn from(f: &GraphFic) -> Self {
        Fic {
            name: f.name.clone(),
            written: f.written,
            issuer: f.issuer.clone(),
            subject: Some(f.subject.clone()),
            audiences: f.audiences.clone(),
            claims_matching_expression: None,
        }
    }
}

/// A deleted FIC that token exchange still honours until the FIC delete propagation delay has
/// passed since `deleted`.
#[derive(Debug, Clone)]
pub(crate) struct FicTombstone {
    /// `key` of the user-assigned identity's ARM ID or of the application's object ID.
    pub owner: String,
    pub fic: Fic,
    pub deleted: Instant,
}

#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub tags: Value,
    pub principal_id: String,
    pub client_id: String,
    pub fics: BTreeMap<String, Fic>,
    /// A FIC write is in progress (Azure refuses overlapping writes on one identity).
    pub fic_write_in_progress: bool,
}

impl Identity {
    pub fn id(&self) -> String {
        // ARM's managed identity RP answers with a lower-case `resourcegroups` segment.
        format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub resource_type: String,
    pub name: String,
    pub location: String,
}

#[derive(Debug, Clone)]
pub(crate) struct ResourceGroup {
    pub name: String,
    pub location: String,
    pub resources: BTreeMap<String, Resource>,
}

#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: String,
    pub display_name: String,
    pub resource_groups: BTreeMap<String, ResourceGroup>,
}

/// The simulated tenant: everything sim-azure serves, seeded from a [`crate::Seed`] and changed by
/// the requests it answers.
#[derive(Debug)]
pub(crate) struct Tenant {
    pub tenant_id: String,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub identities: BTreeMap<String, Identity>,
    pub principals: BTreeMap<String, Principal>,
    pub applications: BTreeMap<String, Application>,
    pub role_defs: Vec<RoleDef>,
    pub assignments: BTreeMap<String, Assignment>,
    /// (principal, role, scope) keys of live assignments → assignment name key: Azure allows
    /// one assignment per tuple, and PUTs check it without scanning.
    tuples: HashMap<(String, String, String), String>,
    /// Live assignments per subscription (lower-cased ID), for the limit.
    per_subscription: HashMap<String, usize>,
    /// Deleted assignments and when: RBAC keeps honouring them for the propagation delay.
    pub tombstones: Vec<(Assignment, Instant)>,
    /// Deleted FICs and when: token exchange keeps honouring them for the FIC delete
    /// propagation delay.
    pub fic_tombstones: Vec<FicTombstone>,
    /// Object ID of the first principal of the seed with a client secret: the operator's.
    pub operator: Option<String>,
    /// Management locks by lower-cased lock ID.
    pub locks: locks::Locks,
    /// Privileged Identity Management: settings, schedule requests and schedules.
    pub pim: pim::Pim,
}

const DEFAULT_TENANT: &str = "00000000-0000-4000-8000-00000000e001";

impl Tenant {
    /// Remembers a FIC `owner` (see [`FicTombstone::owner`]) just deleted, for token exchange
    /// to honour during `delay`; forgets those whose `delay` has passed.
    pub fn bury_fic(&mut self, owner: String, fic: Fic, delay: Duration, now: Instant) {
        self.fic_tombstones
            .retain(|t| now.saturating_duration_since(t.deleted) < delay);
        if !delay.is_zero() {
            self.fic_tombstones.push(FicTombstone {
                owner,
                fic,
                deleted: now,
            });
        }
    }

    /// The FICs of `owner` deleted less than `delay` before `now`.
    pub fn buried_fics(&self, owner: &str, delay: Duration, now: Instant) -> Vec<Fic> {
        self.fic_tombstones
            .iter()
            .filter(|t| t.owner == owner && now.saturating_duration_since(t.deleted) < delay)
            .map(|t| t.fic.clone())
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_identity(
        &mut self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        location: &str,
        tags: Value,
        principal_id: String,
        client_id: String,
        created: Option<Instant>,
    ) -> &Identity {
        let identity = Identity {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            name: name.to_owned(),
            location: location.to_owned(),
            tags,
            principal_id: principal_id.clone(),
            client_id: client_id.clone(),
            fics: BTreeMap::new(),
            fic_write_in_progress: false,
        };
        let id = identity.id();
        self.principals.insert(
            key(&principal_id),
            Principal {
                object_id: principal_id,
                app_id: Some(client_id),
                display_name: name.to_owned(),
                kind: PrincipalKind::ServicePrincipal,
                client_secret: None,
                created,
                identity_id: Some(id.clone()),
                application_id: None,
                graph_roles: Vec::new(),
            },
        );
        self.identities.entry(key(&id)).or_insert(identity)
    }

    /// A principal by object ID, app ID or display name.
    pub fn find_principal(&self, needle: &str) -> Option<&Principal> {
        self.principals.get(&key(needle)).or_else(|| {
            self.principals.values().find(|p| {
                p.display_name == needle
                    || p.app_id
                        .as_deref()
                        .is_some_and(|a| a.eq_ignore_ascii_case(needle))
            })
        })
    }

    pub fn principal_by_app_id(&self, app_id: &str) -> Option<&Principal> {
        self.principals.values().find(|p| {
            p.app_id
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(app_id))
        })
    }

    /// A role by name (case-insensitive), GUID, or full role definition ID.
    pub fn find_role(&self, needle: &str) -> Option<&RoleDef> {
        let guid = needle.rsplit('/').next().unwrap_or(needle);
        self.role_defs
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(guid))
            .or_else(|| {
                self.role_defs
                    .iter()
                    .find(|r| r.name.eq_ignore_ascii_case(needle))
            })
    }

    /// Creates or replaces a custom role definition. A role name belongs to one definition in
    /// the tenant (409 `RoleDefinitionWithSameNameExists`, Azure's code and message). A
    /// replacement keeps the original `createdOn` and `createdBy`.
    pub fn put_role_definition(&mut self, mut def: RoleDef) -> Result<RoleDef, ApiError> {
        if self
            .role_defs
            .iter()
            .any(|r| r.name.eq_ignore_ascii_case(&def.name) && !r.id.eq_ignore_ascii_case(&def.id))
        {
            return Err(ApiError::arm(
                hyper::StatusCode::CONFLICT,
                "RoleDefinitionWithSameNameExists",
                "A custom role with the same name already exists in this directory.",
            ));
        }
        if let Some(old) = self
            .role_defs
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(&def.id))
        {
            def.created_on = old.created_on.clone();
            def.created_by = old.created_by.clone();
        }
        self.role_defs
            .retain(|r| !r.id.eq_ignore_ascii_case(&def.id));
        self.role_defs.push(def.clone());
        Ok(def)
    }

    /// 404 in ARM's words when a scope names a subscription, group or resource that does not exist.
    pub fn check_scope_exists(&self, scope: &str) -> Result<(), ApiError> {
        let segs = ids::segments(scope);
        if segs.is_empty() {
            return Ok(());
        }
        if !segs[0].eq_ignore_ascii_case("subscriptions") || segs.len() < 2 {
            if segs[0].eq_ignore_ascii_case("providers") {
                return Ok(()); // tenant-level provider scopes (e.g. management groups): not modelled
            }
            return Err(ApiError::bad_request(
                "InvalidScope",
                format!("The scope '{scope}' is not valid."),
            ));
        }
        let sub = self
            .subscriptions
            .get(&key(segs[1]))
            .ok_or_else(|| ApiError::subscription_not_found(segs[1]))?;
        if segs.len() == 2 {
            return Ok(());
        }
        if !segs[2].eq_ignore_ascii_case("resourceGroups") || segs.len() < 4 {
            return Err(ApiError::bad_request(
                "InvalidScope",
                format!("The scope '{scope}' is not valid."),
            ));
        }
        let rg = sub.resource_groups.get(&key(segs[3])).ok_or_else(|| {
            ApiError::not_found(
                "ResourceGroupNotFound",
                format!("Resource group '{}' could not be found.", segs[3]),
            )
        })?;
        if segs.len() == 4 {
            return Ok(());
        }
        if !segs[4].eq_ignore_ascii_case("providers") || segs.len() < 8 {
            return Err(ApiError::bad_request(
                "InvalidScope",
                format!("The scope '{scope}' is not valid."),
            ));
        }
        let (ns, rtype, name) = (segs[5], segs[6], segs[7]);
        let full_type = format!("{ns}/{rtype}");
        let exists = rg
            .resources
            .contains_key(&key(&format!("{full_type}/{name}")))
            || (full_type.eq_ignore_ascii_case("Microsoft.ManagedIdentity/userAssignedIdentities")
                && self.identity(segs[1], segs[3], name).is_some());
        if exists {
            Ok(())
        } else {
            Err(ApiError::not_found(
                "ResourceNotFound",
                format!(
                    "The Resource '{full_type}/{name}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                    segs[3]
                ),
            ))
        }
    }

    pub fn identity(&self, sub: &str, rg: &str, name: &str) -> Option<&Identity> {
        self.identities.get(&key(&format!(
            "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        )))
    }

    pub fn identity_mut(&mut self, sub: &str, rg: &str, name: &str) -> Option<&mut Identity> {
        self.identities.get_mut(&key(&format!(
            "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        )))
    }

    /// The role assignments of `object_id` that apply at `scope` (at it or above), counting
    /// only assignments that have propagated (created at least `delay` ago) and deletions that
    /// have not yet propagated. Live ones in name order, then lingering deleted ones.
    pub fn effective_assignments<'a>(
        &'a self,
        object_id: &'a str,
        scope: &'a str,
        now: Instant,
        delay: Duration,
    ) -> impl Iterator<Item = &'a Assignment> + 'a {
        let propagated = move |a: &Assignment| {
            a.created
                .is_none_or(|c| now.saturating_duration_since(c) >= delay)
        };
        let live = self.assignments.values().filter(move |a| propagated(a));
        let lingering = self
            .tombstones
            .iter()
            .filter(move |(a, deleted)| {
                propagated(a) && now.saturating_duration_since(*deleted) < delay
            })
            .map(|(a, _)| a);
        live.chain(lingering).filter(move |a| {
            a.principal_id.eq_ignore_ascii_case(object_id) && ids::is_at_or_above(&a.scope, scope)
        })
    }

    /// Whether `object_id` may perform `action` at `scope` (conditions not evaluated).
    pub fn authorized(
        &self,
        object_id: &str,
        action: &str,
        scope: &str,
        now: Instant,
        delay: Duration,
    ) -> bool {
        self.access(object_id, action, scope, now, delay, None) == Access::Allowed
    }

    /// Azure's RBAC decision for `action` at `scope`. With `facts` (role assignment writes and
    /// deletes), an assignment that carries an ABAC condition grants the action only if its
    /// condition holds for them; one without a condition grants it outright. A condition that
    /// does not parse never holds.
    pub fn access(
        &self,
        object_id: &str,
        action: &str,
        scope: &str,
        now: Instant,
        delay: Duration,
        facts: Option<&abac::Facts>,
    ) -> Access {
        let mut conditioned = false;
        for a in self.effective_assignments(object_id, scope, now, delay) {
            let permits = self
                .find_role(&a.role_definition_guid)
                .is_some_and(|r| rbac::permits(&r.actions, &r.not_actions, action));
            if !permits {
                continue;
            }
            match (facts, a.condition.as_deref()) {
                (None, _) | (_, None) => return Access::Allowed,
                (Some(facts), Some(condition)) => {
                    if abac::parse(condition).is_ok_and(|c| c.evaluate(facts)) {
                        return Access::Allowed;
                    }
                    conditioned = true;
                }
            }
        }
        if conditioned {
            Access::ConditionNotFulfilled
        } else {
            Access::Denied
        }
    }

    /// Deletes a resource group (with everything in it) or a resource, as ARM does when someone
    /// deletes it: the role assignments at or below it go too (ARM deletes a scope's role
    /// assignments with it). Subscriptions are not deleted.
    pub fn delete_scope(&mut self, scope: &str, now: Instant) -> Result<ScopeDeletion, ApiError> {
        self.check_scope_exists(scope)?;
        let segs = ids::segments(scope);
        let is = |i: usize, lit: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
        let mut deleted = ScopeDeletion::default();
        let identity_ids: Vec<String> = match segs.len() {
            4 if is(2, "resourceGroups") => {
                if let Some(sub) = self.subscriptions.get_mut(&key(segs[1])) {
                    deleted.resources = sub
                        .resource_groups
                        .remove(&key(segs[3]))
                        .map_or(0, |rg| rg.resources.len());
                }
                self.identities
                    .iter()
                    .filter(|(_, i)| {
                        i.subscription.eq_ignore_ascii_case(segs[1])
                            && i.resource_group.eq_ignore_ascii_case(segs[3])
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            }
            8 if is(2, "resourceGroups") && is(4, "providers") => {
                let full_type = format!("{}/{}", segs[5], segs[6]);
                if full_type
                    .eq_ignore_ascii_case("Microsoft.ManagedIdentity/userAssignedIdentities")
                {
                    self.identity(segs[1], segs[3], segs[7])
                        .map(|i| key(&i.id()))
                        .into_iter()
                        .collect()
                } else {
                    let removed = self
                        .subscriptions
                        .get_mut(&key(segs[1]))
                        .and_then(|s| s.resource_groups.get_mut(&key(segs[3])))
                        .and_then(|rg| {
                            rg.resources
                                .remove(&key(&format!("{full_type}/{}", segs[7])))
                        });
                    deleted.resources = usize::from(removed.is_some());
                    Vec::new()
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "InvalidScope",
                    format!(
                        "The scope '{scope}' is neither a resource group nor a resource; only those can be deleted."
                    ),
                ));
            }
        };
        for id in identity_ids {
            if let Some(identity) = self.identities.remove(&id) {
                self.principals.remove(&key(&identity.principal_id));
                deleted.identities += 1;
            }
        }
        deleted.role_assignments = self.remove_assignments_under(scope, now);
        Ok(deleted)
    }

    /// Forgets tombstones older than `delay`.
    pub fn prune_tombstones(&mut self, now: Instant, delay: Duration) {
        self.tombstones
            .retain(|(_, deleted)| now.saturating_duration_since(*deleted) < delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::Seed;

    #[test]
    fn seed_errors_name_the_field() {
        let mut seed = Seed::sandbox_default();
        seed.role_assignments[0].role = "No Such Role".into();
        let err = Tenant::from_seed(&seed).unwrap_err().to_string();
        assert!(err.contains("roleAssignments[0].role"), "{err}");
    }
}
