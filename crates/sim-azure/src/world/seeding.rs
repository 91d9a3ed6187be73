//! Building the world from a `Seed`, with errors naming the offending seed field.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use serde_json::json;

use super::{
    Application, Assignment, DEFAULT_TENANT, Principal, PrincipalKind, Resource, ResourceGroup,
    RoleDef, Subscription, World,
};
use crate::error::SimAzureError;
use crate::ids::{self, key};
use crate::roles::built_in_roles;
use crate::seed::{Seed, derived_guid};
use crate::world::MgmtLock;
use crate::world::arm_time;

impl World {
    pub fn from_seed(seed: &Seed) -> Result<Self, SimAzureError> {
        let seeded_at = Utc::now();
        let mut world = World {
            tenant_id: seed
                .tenant_id
                .clone()
                .unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            subscriptions: BTreeMap::new(),
            identities: BTreeMap::new(),
            principals: BTreeMap::new(),
            applications: BTreeMap::new(),
            role_defs: built_in_roles()
                .iter()
                .map(|r| RoleDef {
                    id: r.id.to_owned(),
                    name: r.name.to_owned(),
                    description: r.description.to_owned(),
                    built_in: true,
                    actions: r.actions.iter().map(|s| (*s).to_owned()).collect(),
                    not_actions: r.not_actions.iter().map(|s| (*s).to_owned()).collect(),
                    data_actions: r.data_actions.iter().map(|s| (*s).to_owned()).collect(),
                    not_data_actions: r.not_data_actions.iter().map(|s| (*s).to_owned()).collect(),
                    assignable_scopes: vec!["/".to_owned()],
                    created_on: r.created_on.to_owned(),
                    updated_on: r.updated_on.to_owned(),
                    created_by: None,
                    updated_by: None,
                })
                .collect(),
            assignments: BTreeMap::new(),
            tuples: HashMap::new(),
            per_subscription: HashMap::new(),
            tombstones: Vec::new(),
            locks: BTreeMap::new(),
        };
        for (i, s) in seed.subscriptions.iter().enumerate() {
            let mut sub = Subscription {
                id: s.id.clone(),
                display_name: s.display_name.clone().unwrap_or_else(|| s.id.clone()),
                resource_groups: BTreeMap::new(),
            };
            for (j, rg) in s.resource_groups.iter().enumerate() {
                let location = rg.location.clone().unwrap_or_else(|| "eastus".to_owned());
                let mut group = ResourceGroup {
                    name: rg.name.clone(),
                    location: location.clone(),
                    resources: BTreeMap::new(),
                };
                for (k, r) in rg.resources.iter().enumerate() {
                    if r.resource_type.split('/').count() < 2 {
                        return Err(SimAzureError::seed(
                            format!("subscriptions[{i}].resourceGroups[{j}].resources[{k}].type"),
                            format!(
                                "`{}` is not a full resource type such as Microsoft.Storage/storageAccounts",
                                r.resource_type
                            ),
                        ));
                    }
                    group.resources.insert(
                        key(&format!("{}/{}", r.resource_type, r.name)),
                        Resource {
                            resource_type: r.resource_type.clone(),
                            name: r.name.clone(),
                            location: location.clone(),
                        },
                    );
                }
                for ident in &rg.identities {
                    let principal_id = ident.principal_id.clone().unwrap_or_else(|| {
                        derived_guid(
                            "identity-principal",
                            &format!("{}/{}/{}", s.id, rg.name, ident.name),
                        )
                    });
                    let client_id = ident.client_id.clone().unwrap_or_else(|| {
                        derived_guid(
                            "identity-client",
                            &format!("{}/{}/{}", s.id, rg.name, ident.name),
                        )
                    });
                    world.add_identity(
                        &s.id,
                        &rg.name,
                        &ident.name,
                        &location,
                        json!({}),
                        principal_id,
                        client_id,
                        None,
                    );
                }
                sub.resource_groups.insert(key(&rg.name), group);
            }
            world.subscriptions.insert(key(&s.id), sub);
        }
        for p in &seed.principals {
            let object_id = p
                .object_id
                .clone()
                .unwrap_or_else(|| derived_guid("principal", &p.display_name));
            let app_id = match p.kind {
                PrincipalKind::ServicePrincipal => Some(
                    p.app_id
                        .clone()
                        .unwrap_or_else(|| derived_guid("app", &p.display_name)),
                ),
                _ => p.app_id.clone(),
            };
            world.principals.insert(
                key(&object_id),
                Principal {
                    object_id,
                    app_id,
                    display_name: p.display_name.clone(),
                    kind: p.kind,
                    client_secret: p.client_secret.clone(),
                    created: None,
                    identity_id: None,
                    application_id: None,
                    graph_roles: p.graph_roles.clone(),
                },
            );
        }
        for (i, a) in seed.applications.iter().enumerate() {
            let object_id = a
                .object_id
                .clone()
                .unwrap_or_else(|| derived_guid("application", &a.display_name));
            let app_id = a
                .app_id
                .clone()
                .unwrap_or_else(|| derived_guid("application-app", &a.display_name));
            let sp_id = a
                .service_principal_id
                .clone()
                .unwrap_or_else(|| derived_guid("application-sp", &a.display_name));
            let mut owners = Vec::new();
            for (j, owner) in a.owners.iter().enumerate() {
                let p = world.find_principal(owner).ok_or_else(|| {
                    SimAzureError::seed(
                        format!("applications[{i}].owners[{j}]"),
                        format!("no principal `{owner}`"),
                    )
                })?;
                owners.push(p.object_id.clone());
            }
            world.principals.insert(
                key(&sp_id),
                Principal {
                    object_id: sp_id,
                    app_id: Some(app_id.clone()),
                    display_name: a.display_name.clone(),
                    kind: PrincipalKind::ServicePrincipal,
                    client_secret: a.client_secret.clone(),
                    created: None,
                    identity_id: None,
                    application_id: Some(object_id.clone()),
                    graph_roles: Vec::new(),
                },
            );
            world.applications.insert(
                key(&object_id),
                Application {
                    object_id,
                    app_id,
                    display_name: a.display_name.clone(),
                    owners,
                    fics: BTreeMap::new(),
                },
            );
        }
        for (i, d) in seed.role_definitions.iter().enumerate() {
            if !ids::is_guid(&d.id) {
                return Err(SimAzureError::seed(
                    format!("roleDefinitions[{i}].id"),
                    format!("`{}` is not a GUID", d.id),
                ));
            }
            world.role_defs.push(RoleDef {
                id: d.id.to_ascii_lowercase(),
                name: d.role_name.clone(),
                description: d.description.clone(),
                built_in: false,
                actions: d.actions.clone(),
                not_actions: d.not_actions.clone(),
                data_actions: d.data_actions.clone(),
                not_data_actions: d.not_data_actions.clone(),
                assignable_scopes: if d.assignable_scopes.is_empty() {
                    vec!["/".to_owned()]
                } else {
                    d.assignable_scopes.clone()
                },
                created_on: arm_time(seeded_at),
                updated_on: arm_time(seeded_at),
                created_by: None,
                updated_by: None,
            });
        }
        for (i, ra) in seed.role_assignments.iter().enumerate() {
            let field = |f: &str| format!("roleAssignments[{i}].{f}");
            let principal = world
                .find_principal(&ra.principal)
                .ok_or_else(|| {
                    SimAzureError::seed(
                        field("principal"),
                        format!("no principal, identity or object ID `{}`", ra.principal),
                    )
                })?
                .clone();
            let role = world
                .find_role(&ra.role)
                .ok_or_else(|| {
                    SimAzureError::seed(
                        field("role"),
                        format!("no role named or with ID `{}`", ra.role),
                    )
                })?
                .id
                .clone();
            world
                .check_scope_exists(&ra.scope)
                .map_err(|e| SimAzureError::seed(field("scope"), e.message))?;
            let name = ra.name.clone().unwrap_or_else(|| {
                derived_guid(
                    "assignment",
                    &format!("{}|{}|{}", principal.object_id, role, key(&ra.scope)),
                )
            });
            let now = seeded_at;
            world.insert_assignment(Assignment {
                name,
                scope: ra.scope.trim_end_matches('/').to_owned(),
                role_definition_guid: role,
                principal_id: principal.object_id.clone(),
                principal_type: principal.kind.as_str().to_owned(),
                description: None,
                condition: None,
                condition_version: None,
                created_on: now,
                updated_on: now,
                created_by: None,
                updated_by: None,
                created: None,
            });
        }
        for (i, l) in seed.locks.iter().enumerate() {
            let field = |f: &str| format!("locks[{i}].{f}");
            world
                .check_scope_exists(&l.scope)
                .map_err(|e| SimAzureError::seed(field("scope"), e.message))?;
            if !lock_name_ok(&l.name) {
                return Err(SimAzureError::seed(
                    field("name"),
                    format!("`{}` is not a valid lock name", l.name),
                ));
            }
            world.put_lock(MgmtLock {
                scope: l.scope.trim_end_matches('/').to_owned(),
                name: l.name.clone(),
                level: l.level,
                notes: l.notes.clone(),
                owners: None,
            });
        }
        Ok(world)
    }
}

/// Azure's rule for lock names: 1 to 90 characters, none of `<>*%&:\?.+/` nor a control
/// character.
pub(crate) fn lock_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 90
        && !name
            .chars()
            .any(|c| "<>*%&:\\?.+/".contains(c) || c.is_control())
}
