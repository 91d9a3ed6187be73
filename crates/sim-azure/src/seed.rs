//! The seed: the tenant the simulator starts with, as Rust values or YAML (see
//! `EXAMPLE_YAML` in the tests for a complete document).

use serde::{Deserialize, Serialize};

use crate::error::SimAzureError;
use crate::tenant::{LockLevel, PrincipalKind};

/// The whole seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    /// Tenant (directory) ID; a fixed default when absent.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Subscriptions with their resource groups, resources and identities.
    #[serde(default)]
    pub subscriptions: Vec<SeedSubscription>,
    /// Service principals, users and groups of the directory.
    #[serde(default)]
    pub principals: Vec<SeedPrincipal>,
    /// Applications (app registrations), each with its service principal.
    #[serde(default)]
    pub applications: Vec<SeedApplication>,
    /// Custom role definitions.
    #[serde(default)]
    pub role_definitions: Vec<SeedRoleDefinition>,
    /// Standing role assignments.
    #[serde(default)]
    pub role_assignments: Vec<SeedRoleAssignment>,
    /// Management locks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<SeedLock>,
}

/// A management lock (`Microsoft.Authorization/locks`) at a subscription, resource group or
/// resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedLock {
    /// The scope it is placed at.
    pub scope: String,
    /// Lock name.
    pub name: String,
    /// `CanNotDelete` or `ReadOnly`.
    pub level: LockLevel,
    /// Notes.
    #[serde(default)]
    pub notes: Option<String>,
}

/// A subscription.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSubscription {
    /// Subscription ID (a GUID in Azure; any string is accepted so examples can be replayed).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Resource groups.
    #[serde(default)]
    pub resource_groups: Vec<SeedResourceGroup>,
}

/// A resource group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedResourceGroup {
    /// Name.
    pub name: String,
    /// Location; `eastus` when absent.
    #[serde(default)]
    pub location: Option<String>,
    /// Generic resources (storage accounts, key vaults, ...), used as scopes.
    #[serde(default)]
    pub resources: Vec<SeedResource>,
    /// User-assigned managed identities.
    #[serde(default)]
    pub identities: Vec<SeedIdentity>,
}

/// A generic resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedResource {
    /// Full type, e.g. `Microsoft.Storage/storageAccounts`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Name.
    pub name: String,
}

/// A user-assigned managed identity (also a service principal of the directory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedIdentity {
    /// Resource name.
    pub name: String,
    /// Service principal object ID; derived from the name when absent.
    #[serde(default)]
    pub principal_id: Option<String>,
    /// Client (application) ID; derived from the name when absent.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Federated identity credentials it starts with (made by someone else than lapse).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub federated_credentials: Vec<SeedFederatedCredential>,
}

/// A federated identity credential on a user-assigned identity or an application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedFederatedCredential {
    /// Name (`^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$`).
    pub name: String,
    /// Issuer URL (https).
    pub issuer: String,
    /// Subject, e.g. `repo:contoso/etl:ref:refs/heads/main`.
    pub subject: String,
    /// Audiences; `api://AzureADTokenExchange` when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Description (applications only: managed identity FICs have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A client secret (`passwordCredentials`) or certificate (`keyCredentials`) of an
/// application: metadata only, as Graph returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedCredential {
    /// Friendly name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// When it becomes valid (RFC 3339).
    pub start_date_time: String,
    /// When it expires (RFC 3339).
    pub end_date_time: String,
    /// Its `keyId`; derived from the application and display name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// A directory principal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedPrincipal {
    /// Display name (also how role assignments in the seed refer to it).
    pub display_name: String,
    /// `ServicePrincipal` (default), `User` or `Group`.
    #[serde(default)]
    pub kind: PrincipalKind,
    /// Object ID; derived from the display name when absent.
    #[serde(default)]
    pub object_id: Option<String>,
    /// Application (client) ID for service principals; derived when absent.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Client secret accepted by the token endpoint.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Microsoft Graph application permissions (`roles` of its Graph tokens), e.g.
    /// `Application.ReadWrite.OwnedBy`.
    #[serde(default)]
    pub graph_roles: Vec<String>,
}

/// An application (app registration) and its service principal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedApplication {
    /// Display name.
    pub display_name: String,
    /// Application object ID; derived when absent.
    #[serde(default)]
    pub object_id: Option<String>,
    /// Application (client) ID; derived when absent.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Object ID of its service principal; derived when absent.
    #[serde(default)]
    pub service_principal_id: Option<String>,
    /// Client secret of the application, if any.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Owners (principal display names or object IDs), who may manage its FICs with
    /// `Application.ReadWrite.OwnedBy`.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Client secrets (metadata: Graph never returns a secret's value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub password_credentials: Vec<SeedCredential>,
    /// Certificates (type `AsymmetricX509Cert`, usage `Verify`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_credentials: Vec<SeedCredential>,
    /// Federated identity credentials it starts with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub federated_credentials: Vec<SeedFederatedCredential>,
}

/// A custom role definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRoleDefinition {
    /// Role definition GUID.
    pub id: String,
    /// `roleName`.
    pub role_name: String,
    /// `description`.
    #[serde(default)]
    pub description: String,
    /// Allowed control-plane actions.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Excluded control-plane actions.
    #[serde(default)]
    pub not_actions: Vec<String>,
    /// Allowed data-plane actions.
    #[serde(default)]
    pub data_actions: Vec<String>,
    /// Excluded data-plane actions.
    #[serde(default)]
    pub not_data_actions: Vec<String>,
    /// Where it can be assigned.
    #[serde(default)]
    pub assignable_scopes: Vec<String>,
}

/// A standing role assignment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRoleAssignment {
    /// Principal display name, object ID, or identity name.
    pub principal: String,
    /// Role name or role definition GUID.
    pub role: String,
    /// Scope (ARM ID).
    pub scope: String,
    /// Assignment name (GUID); derived when absent.
    #[serde(default)]
    pub name: Option<String>,
}

/// Namespace for IDs derived from names, so the same seed always yields the same IDs.
const SEED_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c61_7073_652d_5349_4d2d_415a_5552_4531);

/// A stable GUID for `kind` + `name`.
pub(crate) fn derived_guid(kind: &str, name: &str) -> String {
    uuid::Uuid::new_v5(&SEED_NAMESPACE, format!("{kind}:{name}").as_bytes()).to_string()
}

impl Seed {
    /// Parses a YAML seed.
    pub fn from_yaml(text: &str) -> Result<Self, SimAzureError> {
        Ok(serde_yaml_ng::from_str(text)?)
    }

    /// Reads a YAML seed file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SimAzureError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SimAzureError::seed(
                path.display().to_string(),
                format!("cannot read the seed file: {e}"),
            )
        })?;
        Self::from_yaml(&text)
    }

    /// Renders the seed as YAML.
    pub fn to_yaml(&self) -> Result<String, SimAzureError> {
        Ok(serde_yaml_ng::to_string(self)?)
    }

    /// The sandbox's default tenant: one subscription, a resource group with a storage account
    /// and a key vault, two user-assigned identities, and the operator's service principal
    /// (`lapse-operator`) holding User Access Administrator and Managed Identity Contributor
    /// on the subscription (the second lets it write FICs), and an application
    /// (`lapse-demo-app`) the operator owns, with Graph `Application.ReadWrite.OwnedBy`.
    pub fn sandbox_default() -> Self {
        let sub = "00000000-0000-4000-8000-00000000a001".to_owned();
        let scope = format!("/subscriptions/{sub}");
        Seed {
            tenant_id: Some("00000000-0000-4000-8000-00000000e001".to_owned()),
            subscriptions: vec![SeedSubscription {
                id: sub,
                display_name: Some("lapse-sandbox".to_owned()),
                resource_groups: vec![SeedResourceGroup {
                    name: "lapse-demo-rg".to_owned(),
                    location: Some("eastus".to_owned()),
                    resources: vec![
                        SeedResource {
                            resource_type: "Microsoft.Storage/storageAccounts".to_owned(),
                            name: "lapsedemodata".to_owned(),
                        },
                        SeedResource {
                            resource_type: "Microsoft.KeyVault/vaults".to_owned(),
                            name: "lapse-demo-kv".to_owned(),
                        },
                    ],
                    identities: vec![
                        SeedIdentity {
                            name: "backup-runner".to_owned(),
                            ..SeedIdentity::default()
                        },
                        SeedIdentity {
                            name: "report-agent".to_owned(),
                            ..SeedIdentity::default()
                        },
                    ],
                }],
            }],
            principals: vec![SeedPrincipal {
                display_name: "lapse-operator".to_owned(),
                kind: PrincipalKind::ServicePrincipal,
                client_secret: Some("lapse-sandbox-operator-secret".to_owned()),
                graph_roles: vec!["Application.ReadWrite.OwnedBy".to_owned()],
                ..SeedPrincipal::default()
            }],
            applications: vec![SeedApplication {
                display_name: "lapse-demo-app".to_owned(),
                owners: vec!["lapse-operator".to_owned()],
                ..SeedApplication::default()
            }],
            role_definitions: Vec::new(),
            role_assignments: vec![
                SeedRoleAssignment {
                    principal: "lapse-operator".to_owned(),
                    role: "User Access Administrator".to_owned(),
                    scope: scope.clone(),
                    name: None,
                },
                SeedRoleAssignment {
                    principal: "lapse-operator".to_owned(),
                    role: "Managed Identity Contributor".to_owned(),
                    scope,
                    name: None,
                },
            ],
            locks: Vec::new(),
        }
    }
}

/// The resource group of the sandbox's estate fixtures ([`Seed::sandbox_estate`]).
pub const ESTATE_RESOURCE_GROUP: &str = "lapse-legacy-rg";

impl Seed {
    /// What `lapse-sandbox up` seeds: [`Seed::sandbox_default`] and an estate with the standing
    /// privileges `kubectl lapse audit` exists to find, on identities, groups and an application
    /// of their own, so the end-to-end suites' counts of their fixtures hold:
    ///
    /// - resource group `lapse-legacy-rg` with storage account `lapselegacydata` and identity
    ///   `legacy-etl`, which trusts GitHub Actions through a federated credential
    ///   (`repo:contoso/legacy-etl:ref:refs/heads/main`) nobody asked lapse for;
    /// - standing role assignments: service principal `ci-deployer` Contributor on
    ///   `lapse-legacy-rg`, `legacy-etl` Storage Blob Data Contributor on `lapselegacydata`,
    ///   application `legacy-billing`'s service principal Reader on the subscription;
    /// - `legacy-billing` with a two-year client secret (`billing-prod`, started 30 days ago)
    ///   and a 30-day one (`billing-rotation`, shorter than the audit's 90-day threshold);
    /// - service principal `lapse-auditor` (client secret `lapse-sandbox-auditor-secret`) with
    ///   Reader on the subscription and Graph `Application.Read.All`: exactly what the audit
    ///   needs (docs/kubectl-lapse.md). The operator stays the first principal with a secret.
    ///
    /// Credential dates are relative to today (UTC midnight), so the secrets never expire in a
    /// sandbox started later.
    pub fn sandbox_estate() -> Self {
        let mut seed = Self::sandbox_default();
        let today = chrono::Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_else(chrono::Utc::now);
        let at = |days: i64| {
            (today + chrono::TimeDelta::days(days))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let Some(sub) = seed.subscriptions.first_mut() else {
            return seed;
        };
        let sub_scope = format!("/subscriptions/{}", sub.id);
        let rg_scope = format!("{sub_scope}/resourceGroups/{ESTATE_RESOURCE_GROUP}");
        sub.resource_groups.push(SeedResourceGroup {
            name: ESTATE_RESOURCE_GROUP.to_owned(),
            location: Some("eastus".to_owned()),
            resources: vec![SeedResource {
                resource_type: "Microsoft.Storage/storageAccounts".to_owned(),
                name: "lapselegacydata".to_owned(),
            }],
            identities: vec![SeedIdentity {
                name: "legacy-etl".to_owned(),
                federated_credentials: vec![SeedFederatedCredential {
                    name: "github-main".to_owned(),
                    issuer: "https://token.actions.githubusercontent.com".to_owned(),
                    subject: "repo:contoso/legacy-etl:ref:refs/heads/main".to_owned(),
                    ..SeedFederatedCredential::default()
                }],
                ..SeedIdentity::default()
            }],
        });
        seed.principals.push(SeedPrincipal {
            display_name: "ci-deployer".to_owned(),
            ..SeedPrincipal::default()
        });
        seed.principals.push(SeedPrincipal {
            display_name: "lapse-auditor".to_owned(),
            client_secret: Some("lapse-sandbox-auditor-secret".to_owned()),
            graph_roles: vec!["Application.Read.All".to_owned()],
            ..SeedPrincipal::default()
        });
        seed.applications.push(SeedApplication {
            display_name: "legacy-billing".to_owned(),
            password_credentials: vec![
                SeedCredential {
                    display_name: Some("billing-prod".to_owned()),
                    start_date_time: at(-30),
                    end_date_time: at(-30 + 730),
                    key_id: None,
                },
                SeedCredential {
                    display_name: Some("billing-rotation".to_owned()),
                    start_date_time: at(-10),
                    end_date_time: at(20),
                    key_id: None,
                },
            ],
            ..SeedApplication::default()
        });
        let standing = |principal: &str, role: &str, scope: &str| SeedRoleAssignment {
            principal: principal.to_owned(),
            role: role.to_owned(),
            scope: scope.to_owned(),
            name: None,
        };
        seed.role_assignments.extend([
            standing("lapse-auditor", "Reader", &sub_scope),
            standing("ci-deployer", "Contributor", &rg_scope),
            standing(
                "legacy-etl",
                "Storage Blob Data Contributor",
                &format!("{rg_scope}/providers/Microsoft.Storage/storageAccounts/lapselegacydata"),
            ),
            standing("legacy-billing", "Reader", &sub_scope),
        ]);
        seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_YAML: &str = r#"
tenantId: 72f988bf-0000-4000-8000-000000000001
subscriptions:
  - id: 00000000-0000-4000-8000-000000000001
    displayName: sandbox
    resourceGroups:
      - name: app-rg
        location: eastus
        resources:
          - { type: Microsoft.Storage/storageAccounts, name: appdata }
          - { type: Microsoft.KeyVault/vaults, name: app-kv }
        identities:
          - { name: backup-runner }
principals:
  - { displayName: lapse-operator, kind: ServicePrincipal, clientSecret: s3cret,
      graphRoles: [Application.ReadWrite.OwnedBy] }
  - { displayName: alice, kind: User }
applications:
  - { displayName: reports-app, owners: [lapse-operator] }
roleDefinitions:
  - id: 11111111-2222-4333-8444-555555555555
    roleName: Blob lister
    actions: [Microsoft.Storage/storageAccounts/blobServices/containers/read]
    assignableScopes: [/subscriptions/00000000-0000-4000-8000-000000000001]
roleAssignments:
  - { principal: lapse-operator, role: User Access Administrator,
      scope: /subscriptions/00000000-0000-4000-8000-000000000001 }
  - { principal: backup-runner, role: Blob lister,
      scope: /subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/app-rg }
locks:
  - { scope: /subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/app-rg,
      name: no-delete, level: CanNotDelete, notes: production data }
"#;

    #[test]
    fn example_yaml_builds_a_tenant() {
        let seed = Seed::from_yaml(EXAMPLE_YAML).unwrap();
        let tenant = crate::tenant::Tenant::from_seed(&seed).unwrap();
        assert_eq!(tenant.tenant_id, "72f988bf-0000-4000-8000-000000000001");
        assert_eq!(tenant.assignments.len(), 2);
        assert_eq!(tenant.applications.len(), 1);
        assert!(tenant.find_principal("alice").is_some());
        assert!(tenant.find_role("blob lister").is_some());
        assert_eq!(tenant.locks.len(), 1);
        // Derived IDs are stable: the same seed yields the same tenant.
        let again =
            crate::tenant::Tenant::from_seed(&Seed::from_yaml(EXAMPLE_YAML).unwrap()).unwrap();
        assert_eq!(
            tenant.assignments.keys().collect::<Vec<_>>(),
            again.assignments.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn sandbox_seed_round_trips_through_yaml() {
        let seed = Seed::sandbox_default();
        let yaml = seed.to_yaml().unwrap();
        assert_eq!(Seed::from_yaml(&yaml).unwrap(), seed);
    }

    #[test]
    fn the_estate_seed_builds_and_keeps_the_operator_first() {
        let seed = Seed::sandbox_estate();
        let yaml = seed.to_yaml().unwrap();
        assert_eq!(Seed::from_yaml(&yaml).unwrap(), seed);
        let tenant = crate::tenant::Tenant::from_seed(&seed).unwrap();
        let operator = tenant.operator.clone().unwrap();
        assert_eq!(
            tenant.find_principal(&operator).unwrap().display_name,
            "lapse-operator"
        );
        let etl = tenant
            .identities
            .values()
            .find(|i| i.name == "legacy-etl")
            .unwrap();
        assert_eq!(etl.fics.len(), 1);
        let billing = tenant
            .applications
            .values()
            .find(|a| a.display_name == "legacy-billing")
            .unwrap();
        let lifetimes: Vec<i64> = billing
            .password_credentials
            .iter()
            .map(|c| (c.end - c.start).num_days())
            .collect();
        assert_eq!(lifetimes, [730, 30]);
        // The sandbox's own fixtures are untouched.
        let default = crate::tenant::Tenant::from_seed(&Seed::sandbox_default()).unwrap();
        for name in ["backup-runner", "report-agent"] {
            let count = |w: &crate::tenant::Tenant| {
                let i = w.identities.values().find(|i| i.name == name).unwrap();
                (
                    i.fics.len(),
                    w.assignments
                        .values()
                        .filter(|a| a.principal_id == i.principal_id)
                        .count(),
                )
            };
            assert_eq!(count(&tenant), count(&default), "{name}");
        }
    }

    #[test]
    fn seeded_credentials_and_fics_are_checked_by_field() {
        let mut seed = Seed::sandbox_estate();
        seed.applications[1].password_credentials[0].end_date_time = "soon".into();
        let err = crate::tenant::Tenant::from_seed(&seed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("applications[1].passwordCredentials[0].endDateTime"),
            "{err}"
        );
        let mut seed = Seed::sandbox_estate();
        seed.subscriptions[0].resource_groups[1].identities[0].federated_credentials[0].issuer =
            "http://plain.example".into();
        let err = crate::tenant::Tenant::from_seed(&seed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resourceGroups[1].identities[0].federatedCredentials[0].issuer"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err = Seed::from_yaml("subscriptionz: []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("subscriptionz"), "{err}");
    }
}
