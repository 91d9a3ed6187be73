//! Building the tenant from a `Seed`, with errors naming the offending seed field.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use serde_json::json;

use super::{
    AppCredential, Application, Assignment, DEFAULT_TENANT, Fic, GraphFic, Principal,
    PrincipalKind, Resource, ResourceGroup, RoleDef, Subscription, Tenant,
};
use crate::error::SimAzureError;
use crate::ids::{self, key};
use crate::roles::built_in_role_definitions;
use crate::seed::{Seed, SeedCredential, SeedFederatedCredential, derived_guid};
use crate::tenant::MgmtLock;
use crate::tenant::arm_time;

/// The audience of a seeded FIC that names none: Entra's token exchange.
const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A seeded FIC, checked as Azure checks a created one (name, https issuer, a subject, exactly
/// one audience); errors name the seed field.
fn seeded_fic(
    f: &SeedFederatedCredential,
    field: &str,
) -> Result<(String, String, String, Vec<String>), SimAzureError> {
    let name_ok = f.name.len() >= 3
        && f.name.len() <= 120
        && f.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && f.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(SimAzureError::seed(
            format!("{field}.name"),
            format!(
                "`{}` does not match ^[a-zA-Z0-9][a-zA-Z0-9-_]{{2,119}}$",
                f.name
            ),
        ));
    }
    if !url::Url::parse(&f.issuer).is_ok_and(|u| u.scheme() == "https") {
        return Err(SimAzureError::seed(
            format!("{field}.issuer"),
            format!("`{}` is not an https URL", f.issuer),
        ));
    }
    if f.subject.is_empty() {
        return Err(SimAzureError::seed(
            format!("{field}.subject"),
            "is empty".to_owned(),
        ));
    }
    let audiences = if f.audiences.is_empty() {
        vec![DEFAULT_AUDIENCE.to_owned()]
    } else {
        f.audiences.clone()
    };
    if audiences.len() != 1 {
        return Err(SimAzureError::seed(
            format!("{field}.audiences"),
            "Azure accepts exactly one audience".to_owned(),
        ));
    }
    Ok((
        f.name.clone(),
        f.issuer.clone(),
        f.subject.clone(),
        audiences,
    ))
}

/// When seeded FICs were written: long enough ago that any propagation delay has passed.
fn long_ago() -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_sub(std::time::Duration::from_secs(24 * 3600))
        .unwrap_or(now)
}

/// A seeded secret or certificate of application `app`; errors name the seed field.
fn seeded_credential(
    c: &SeedCredential,
    app: &str,
    kind: &str,
    index: usize,
    field: &str,
) -> Result<AppCredential, SimAzureError> {
    let time = |f: &str, v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| SimAzureError::seed(format!("{field}.{f}"), format!("`{v}`: {e}")))
    };
    let start = time("startDateTime", &c.start_date_time)?;
    let end = time("endDateTime", &c.end_date_time)?;
    if end <= start {
        return Err(SimAzureError::seed(
            format!("{field}.endDateTime"),
            "is not after startDateTime".to_owned(),
        ));
    }
    let key_id = match &c.key_id {
        Some(k) if ids::is_guid(k) => k.to_ascii_lowercase(),
        Some(k) => {
            return Err(SimAzureError::seed(
                format!("{field}.keyId"),
                format!("`{k}` is not a GUID"),
            ));
        }
        None => derived_guid(
            "credential",
            &format!(
                "{app}/{kind}/{index}/{}",
                c.display_name.as_deref().unwrap_or("")
            ),
        ),
    };
    let value = derived_guid("credential-value", &key_id);
    let (hint, custom_key_identifier) = if kind == "password" {
        (Some(value.chars().take(3).collect()), None)
    } else {
        // A SHA-1 thumbprint is 20 bytes; Graph shows it base64-encoded.
        use base64::Engine as _;
        let mut thumbprint = uuid::Uuid::parse_str(&value)
            .map(|u| u.as_bytes().to_vec())
            .unwrap_or_default();
        thumbprint.extend_from_slice(&[0x1a, 0x2b, 0x3c, 0x4d]);
        (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(thumbprint)),
        )
    };
    Ok(AppCredential {
        key_id,
        display_name: c.display_name.clone(),
        start,
        end,
        hint,
        custom_key_identifier,
    })
}

impl Tenant {
    pub fn from_seed(seed: &Seed) -> Result<Self, SimAzureError> {
        let seeded_at = Utc::now();
        let mut tenant = Tenant {
            tenant_id: seed
                .tenant_id
                .clone()
                .unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            subscriptions: BTreeMap::new(),
            identities: BTreeMap::new(),
            principals: BTreeMap::new(),
            applications: BTreeMap::new(),
            role_defs: built_in_role_definitions()
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
            fic_tombstones: Vec::new(),
            operator: None,
            locks: BTreeMap::new(),
            pim: super::pim::Pim::default(),
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
                for (n, ident) in rg.identities.iter().enumerate() {
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
                    let id = tenant
                        .add_identity(
                            &s.id,
                            &rg.name,
                            &ident.name,
                            &location,
                            json!({}),
                            principal_id,
                            client_id,
                            None,
                        )
                        .id();
                    for (k, f) in ident.federated_credentials.iter().enumerate() {
                        let field = format!(
                            "subscriptions[{i}].resourceGroups[{j}].identities[{n}].federatedCredentials[{k}]"
                        );
                        let (name, issuer, subject, audiences) = seeded_fic(f, &field)?;
                        if let Some(identity) = tenant.identities.get_mut(&key(&id)) {
                            identity.fics.insert(
                                key(&name),
                                Fic {
                                    name,
                                    written: long_ago(),
                                    issuer,
                                    subject: Some(subject),
                                    audiences,
                                    claims_matching_expression: None,
                                },
                            );
                        }
                    }
                }
                sub.resource_groups.insert(key(&rg.name), group);
            }
            tenant.subscriptions.insert(key(&s.id), sub);
        }
        for p in &seed.principals {
            let object_id = p
                .object_id
                .clone()
                .unwrap_or_else(|| derived_guid("principal", &p.display_name));
            if tenant.operator.is_none() && p.client_secret.is_some() {
                tenant.operator = Some(object_id.clone());
            }
            let app_id = match p.kind {
                PrincipalKind::ServicePrincipal => Some(
                    p.app_id
                        .clone()
                        .unwrap_or_else(|| derived_guid("app", &p.display_name)),
                ),
                _ => p.app_id.clone(),
            };
            tenant.principals.insert(
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
                let p = tenant.find_principal(owner).ok_or_else(|| {
                    SimAzureError::seed(
                        format!("applications[{i}].owners[{j}]"),
                        format!("no principal `{owner}`"),
                    )
                })?;
                owners.push(p.object_id.clone());
            }
            tenant.principals.insert(
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
            let mut fics = BTreeMap::new();
            for (k, f) in a.federated_credentials.iter().enumerate() {
                let (name, issuer, subject, audiences) =
                    seeded_fic(f, &format!("applications[{i}].federatedCredentials[{k}]"))?;
                fics.insert(
                    key(&name),
                    GraphFic {
                        id: derived_guid("application-fic", &format!("{object_id}/{name}")),
                        written: long_ago(),
                        name,
                        issuer,
                        subject,
                        audiences,
                        description: f.description.clone(),
                    },
                );
            }
            let password_credentials = a
                .password_credentials
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    seeded_credential(
                        c,
                        &object_id,
                        "password",
                        k,
                        &format!("applications[{i}].passwordCredentials[{k}]"),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let key_credentials = a
                .key_credentials
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    seeded_credential(
                        c,
                        &object_id,
                        "key",
                        k,
                        &format!("applications[{i}].keyCredentials[{k}]"),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            tenant.applications.insert(
                key(&object_id),
                Application {
                    object_id,
                    app_id,
                    display_name: a.display_name.clone(),
                    owners,
                    fics,
                    password_credentials,
                    key_credentials,
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
            tenant.role_defs.push(RoleDef {
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
            let principal = tenant
                .find_principal(&ra.principal)
                .ok_or_else(|| {
                    SimAzureError::seed(
                        field("principal"),
                        format!("no principal, identity or object ID `{}`", ra.principal),
                    )
                })?
                .clone();
            let role = tenant
                .find_role(&ra.role)
                .ok_or_else(|| {
                    SimAzureError::seed(
                        field("role"),
                        format!("no role named or with ID `{}`", ra.role),
                    )
                })?
                .id
                .clone();
            tenant
                .check_scope_exists(&ra.scope)
                .map_err(|e| SimAzureError::seed(field("scope"), e.message))?;
            let name = ra.name.clone().unwrap_or_else(|| {
                derived_guid(
                    "assignment",
                    &format!("{}|{}|{}", principal.object_id, role, key(&ra.scope)),
                )
            });
            let now = seeded_at;
            tenant.insert_assignment(Assignment {
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
            tenant
                .check_scope_exists(&l.scope)
                .map_err(|e| SimAzureError::seed(field("scope"), e.message))?;
            if !lock_name_ok(&l.name) {
                return Err(SimAzureError::seed(
                    field("name"),
                    format!("`{}` is not a valid lock name", l.name),
                ));
            }
            tenant.put_lock(MgmtLock {
                scope: l.scope.trim_end_matches('/').to_owned(),
                name: l.name.clone(),
                level: l.level,
                notes: l.notes.clone(),
                owners: None,
            });
        }
        Ok(tenant)
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
