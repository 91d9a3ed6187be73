//! Role references as users write them (a name, a GUID or a full role definition ID) and their
//! resolution to role definition GUIDs, which is what policies and Azure compare.

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

use crate::arm::ArmId;

/// Longest role reference accepted.
pub const MAX_ROLE_LEN: usize = crate::v1alpha1::MAX_ROLE_LEN as usize;

/// A role as written in a grant or a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleRef {
    /// A role name such as `Storage Blob Data Reader`; needs a [`RoleCatalogue`] to resolve.
    Name(String),
    /// A bare role definition GUID.
    Guid(Uuid),
    /// `<scope>/providers/Microsoft.Authorization/roleDefinitions/<guid>`; `scope` is `None` for
    /// the tenant-level form.
    DefinitionId { scope: Option<ArmId>, guid: Uuid },
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RoleError {
    #[error("role is empty")]
    Empty,
    #[error("role `{input}` is malformed: {reason}")]
    Malformed { input: String, reason: String },
    #[error("role `{name}` is not a known role name")]
    Unknown { name: String },
    /// Two role definitions share this name (case-insensitively), so the name cannot pick one.
    #[error("role name `{name}` matches more than one role definition; use its GUID")]
    Ambiguous { name: String },
}

impl RoleRef {
    /// Classifies a role reference. Surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<RoleRef, RoleError> {
        let s = s.trim();
        let malformed = |reason: String| RoleError::Malformed {
            input: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(RoleError::Empty);
        }
        if s.len() > MAX_ROLE_LEN {
            return Err(malformed(format!(
                "it is {} bytes long; the maximum is {MAX_ROLE_LEN}",
                s.len()
            )));
        }
        if s.starts_with('/') {
            return parse_definition_id(s).map_err(malformed);
        }
        if let Some(guid) = parse_hyphenated_guid(s) {
            return Ok(RoleRef::Guid(guid));
        }
        if s.chars().any(char::is_control) {
            return Err(malformed(
                "a role name must not contain control characters".into(),
            ));
        }
        Ok(RoleRef::Name(s.to_owned()))
    }
}

/// Only the canonical 8-4-4-4-12 form counts as a GUID; anything else is a name.
fn parse_hyphenated_guid(s: &str) -> Option<Uuid> {
    let shaped = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    shaped.then(|| Uuid::try_parse(s).ok()).flatten()
}

fn parse_definition_id(s: &str) -> Result<RoleRef, String> {
    let id = ArmId::parse(s).map_err(|e| e.to_string())?;
    let not_a_definition = || {
        "a role definition ID ends in `/providers/Microsoft.Authorization/roleDefinitions/<guid>`"
            .to_owned()
    };
    let is_definition = id
        .provider()
        .is_some_and(|p| p.eq_ignore_ascii_case("Microsoft.Authorization"))
        && id
            .resource_type()
            .is_some_and(|t| t.eq_ignore_ascii_case("Microsoft.Authorization/roleDefinitions"));
    if !is_definition {
        return Err(not_a_definition());
    }
    let name = id.name().unwrap_or_default();
    let guid = parse_hyphenated_guid(name)
        .ok_or_else(|| format!("role definition name `{name}` is not a GUID"))?;
    let suffix_len = "/providers/Microsoft.Authorization/roleDefinitions/".len() + name.len();
    let scope_text = &id.as_str()[..id.as_str().len().saturating_sub(suffix_len)];
    let scope = if scope_text.is_empty() {
        None
    } else {
        let scope = ArmId::parse(scope_text).map_err(|e| e.to_string())?;
        let is_subscription = scope.subscription().is_some()
            && scope.resource_group().is_none()
            && scope.provider().is_none();
        let is_management_group = scope.is_scope() && scope.subscription().is_none();
        if !(is_subscription || is_management_group) {
            return Err(format!(
                "role definitions live at a subscription, a management group or the tenant, not at `{scope}`"
            ));
        }
        Some(scope)
    };
    Ok(RoleRef::DefinitionId { scope, guid })
}

impl fmt::Display for RoleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleRef::Name(name) => f.write_str(name),
            RoleRef::Guid(guid) => write!(f, "{guid}"),
            RoleRef::DefinitionId { scope, guid } => write!(
                f,
                "{}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
                scope.as_ref().map(ArmId::as_str).unwrap_or_default()
            ),
        }
    }
}

/// One Azure built-in role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltInRole {
    pub name: &'static str,
    pub guid: &'static str,
    pub description: &'static str,
}

/// Built-in roles lapse knows by name without asking ARM. Names and GUIDs are Azure's own,
/// taken from Microsoft's "Azure built-in roles" reference (MicrosoftDocs/azure-docs,
/// `articles/role-based-access-control/built-in-roles.md`, revision of 2026-04-09).
#[rustfmt::skip]
pub const BUILT_IN_ROLES: &[BuiltInRole] = &[
    // Privileged
    BuiltInRole { name: "Owner", guid: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC." },
    BuiltInRole { name: "Contributor", guid: "b24988ac-6180-42a0-ab88-20f7382dd24c", description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC." },
    BuiltInRole { name: "User Access Administrator", guid: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", description: "Lets you manage user access to Azure resources." },
    BuiltInRole { name: "Role Based Access Control Administrator", guid: "f58310d9-a9f6-439a-9e8d-f62e7b41a168", description: "Manage access to Azure resources by assigning roles using Azure RBAC." },
    // General
    BuiltInRole { name: "Reader", guid: "acdd72a7-3385-48ef-bd42-f606fba81ae7", description: "View all resources, but does not allow you to make any changes." },
    // Storage
    BuiltInRole { name: "Storage Account Contributor", guid: "17d1049b-9a84-46fb-8f53-869881c3d3ab", description: "Permits management of storage accounts, including access to the account key." },
    BuiltInRole { name: "Storage Blob Data Reader", guid: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", description: "Read and list Azure Storage containers and blobs." },
    BuiltInRole { name: "Storage Blob Data Contributor", guid: "ba92f5b4-2d11-453d-a403-e96b0029c9fe", description: "Read, write, and delete Azure Storage containers and blobs." },
    BuiltInRole { name: "Storage Blob Data Owner", guid: "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", description: "Provides full access to Azure Storage blob containers and data, including assigning POSIX access control." },
    BuiltInRole { name: "Storage Blob Delegator", guid: "db58b8e5-c6ad-4a2a-8342-4190687cbf4a", description: "Get a user delegation key to create a shared access signature for a container or blob." },
    BuiltInRole { name: "Storage Queue Data Reader", guid: "19e7f393-937e-4f77-808e-94535e297925", description: "Read and list Azure Storage queues and queue messages." },
    BuiltInRole { name: "Storage Queue Data Contributor", guid: "974c5e8b-45b9-4653-ba55-5f855dd0fb88", description: "Read, write, and delete Azure Storage queues and queue messages." },
    BuiltInRole { name: "Storage Queue Data Message Sender", guid: "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a", description: "Add messages to an Azure Storage queue." },
    BuiltInRole { name: "Storage Queue Data Message Processor", guid: "8a0f0c08-91a1-4084-bc3d-661d67233fed", description: "Peek, retrieve, and delete a message from an Azure Storage queue." },
    BuiltInRole { name: "Storage Table Data Reader", guid: "76199698-9eea-4c19-bc75-cec21354c6b6", description: "Allows for read access to Azure Storage tables and entities." },
    BuiltInRole { name: "Storage Table Data Contributor", guid: "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", description: "Allows for read, write and delete access to Azure Storage tables and entities." },
    // Security
    BuiltInRole { name: "Key Vault Administrator", guid: "00482a5a-887f-4fb3-b363-3b7fe8e74483", description: "Perform all data plane operations on a key vault and all objects in it." },
    BuiltInRole { name: "Key Vault Reader", guid: "21090545-7ca7-4776-b22c-e363652d74d2", description: "Read metadata of key vaults and its certificates, keys, and secrets." },
    BuiltInRole { name: "Key Vault Secrets Officer", guid: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", description: "Perform any action on the secrets of a key vault, except manage permissions." },
    BuiltInRole { name: "Key Vault Secrets User", guid: "4633458b-17de-408a-b874-0445c86b69e6", description: "Read secret contents." },
    BuiltInRole { name: "Key Vault Crypto Officer", guid: "14b46e9e-c2b7-41b4-b07b-48a6ebf60603", description: "Perform any action on the keys of a key vault, except manage permissions." },
    BuiltInRole { name: "Key Vault Crypto User", guid: "12338af0-0e69-4776-bea7-57ae8d297424", description: "Perform cryptographic operations using keys." },
    BuiltInRole { name: "Key Vault Certificates Officer", guid: "a4417e6f-fecd-4de8-b567-7b0420556985", description: "Perform any action on the certificates of a key vault, except manage permissions." },
    BuiltInRole { name: "Key Vault Certificate User", guid: "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba", description: "Read certificate contents." },
    // Containers
    BuiltInRole { name: "AcrPull", guid: "7f951dda-4ed3-4680-a7ca-43fe172d538d", description: "Pull artifacts from a container registry." },
    BuiltInRole { name: "AcrPush", guid: "8311e382-0749-4cb8-b61a-304f252e45ec", description: "Push artifacts to or pull artifacts from a container registry." },
    BuiltInRole { name: "Azure Kubernetes Service Cluster User Role", guid: "4abbcc35-e782-43d8-92c5-2d3f1bd2253f", description: "List cluster user credential action." },
    BuiltInRole { name: "Azure Kubernetes Service Cluster Admin Role", guid: "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8", description: "List cluster admin credential action." },
    BuiltInRole { name: "Azure Kubernetes Service RBAC Reader", guid: "7f6c6a51-bcf8-42ba-9220-52d62157d7db", description: "Allows read-only access to see most objects in a namespace." },
    BuiltInRole { name: "Azure Kubernetes Service RBAC Writer", guid: "a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb", description: "Allows read/write access to most objects in a namespace." },
    BuiltInRole { name: "Azure Kubernetes Service RBAC Admin", guid: "3498e952-d568-435e-9b2c-8d77e338d7f7", description: "Lets you manage all resources under cluster/namespace, except update or delete resource quotas and namespaces." },
    BuiltInRole { name: "Azure Kubernetes Service RBAC Cluster Admin", guid: "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b", description: "Lets you manage all resources in the cluster." },
    // Identity
    BuiltInRole { name: "Managed Identity Operator", guid: "f1a07417-d97a-45cb-824c-7a7467783830", description: "Read and Assign User Assigned Identity." },
    BuiltInRole { name: "Managed Identity Contributor", guid: "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59", description: "Create, Read, Update, and Delete User Assigned Identity." },
    // Networking, compute, monitoring
    BuiltInRole { name: "Network Contributor", guid: "4d97b98b-1d4f-4787-a291-c67834d212e7", description: "Lets you manage networks, but not access to them." },
    BuiltInRole { name: "Virtual Machine Contributor", guid: "9980e02c-c2be-4d73-94e8-173b1dc7cf3c", description: "Create and manage virtual machines, but not access to them." },
    BuiltInRole { name: "Monitoring Reader", guid: "43d0d8ad-25c7-4714-9337-8ba259a9fe05", description: "Can read all monitoring data (metrics, logs, etc.)." },
    BuiltInRole { name: "Monitoring Metrics Publisher", guid: "3913510d-42f4-4e42-8a64-420c390055eb", description: "Enables publishing metrics against Azure resources." },
];

/// A role reference resolved to its role definition GUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRole {
    pub guid: Uuid,
    /// The role's name when the catalogue knows it.
    pub name: Option<String>,
}

#[derive(Clone, Debug)]
enum NameEntry {
    One { guid: Uuid, name: String },
    Ambiguous,
}

/// Role names and GUIDs known to the operator: the built-ins plus custom roles read from ARM.
#[derive(Clone, Debug, Default)]
pub struct RoleCatalogue {
    /// Keyed by lowercase name: Azure role names are case-insensitive.
    by_name: HashMap<String, NameEntry>,
    by_guid: HashMap<Uuid, String>,
}

impl RoleCatalogue {
    pub fn builtin() -> Self {
        let mut catalogue = Self::default();
        for role in BUILT_IN_ROLES {
            if let Ok(guid) = Uuid::try_parse(role.guid) {
                catalogue.insert(role.name, guid);
            }
        }
        catalogue
    }

    /// Adds a role. A name already bound to a different GUID becomes ambiguous and no longer
    /// resolves (its GUIDs still do), so no insertion order can silently redirect a name.
    pub fn insert(&mut self, name: &str, guid: Uuid) {
        let name = name.trim();
        let key = name.to_lowercase();
        match self.by_name.get(&key) {
            Some(NameEntry::One { guid: known, .. }) if *known != guid => {
                self.by_name.insert(key, NameEntry::Ambiguous);
            }
            Some(_) => {}
            None => {
                self.by_name.insert(
                    key,
                    NameEntry::One {
                        guid,
                        name: name.to_owned(),
                    },
                );
            }
        }
        self.by_guid.entry(guid).or_insert_with(|| name.to_owned());
    }

    pub fn resolve(&self, r: &RoleRef) -> Result<ResolvedRole, RoleError> {
        let guid = match r {
            RoleRef::Name(name) => match self.by_name.get(&name.trim().to_lowercase()) {
                Some(NameEntry::One { guid, name }) => {
                    return Ok(ResolvedRole {
                        guid: *guid,
                        name: Some(name.clone()),
                    });
                }
                Some(NameEntry::Ambiguous) => {
                    return Err(RoleError::Ambiguous { name: name.clone() });
                }
                None => return Err(RoleError::Unknown { name: name.clone() }),
            },
            RoleRef::Guid(guid) | RoleRef::DefinitionId { guid, .. } => *guid,
        };
        Ok(ResolvedRole {
            guid,
            name: self.name_of(&guid).map(str::to_owned),
        })
    }

    pub fn name_of(&self, guid: &Uuid) -> Option<&str> {
        self.by_guid.get(guid).map(String::as_str)
    }
}

/// `/subscriptions/<sub>/providers/Microsoft.Authorization/roleDefinitions/<guid>`, the form ARM
/// expects in a role assignment's `roleDefinitionId`.
pub fn role_definition_id(subscription: &str, guid: &Uuid) -> String {
    format!(
        "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
}

/// The action that makes a role privileged for lapse: whoever holds it can hand out any access,
/// standing access included, so federating its holder hands that power to a workload.
pub const ROLE_ASSIGNMENT_WRITE: &str = "Microsoft.Authorization/roleAssignments/write";

/// Built-in roles that can write role assignments: Owner, User Access Administrator and Role
/// Based Access Control Administrator. Known without asking ARM; other roles are judged by
/// their permissions ([`permits`]).
pub const PRIVILEGED_BUILT_IN_ROLES: [Uuid; 3] = [
    Uuid::from_u128(0x8e3af657_a8ff_443c_a75c_2fe8c4bcb635),
    Uuid::from_u128(0x18d7d88d_d35e_4fb5_a5c3_7773c20a72d9),
    Uuid::from_u128(0xf58310d9_a9f6_439a_9e8d_f62e7b41a168),
];

/// Whether a role permission allows `action`: one of `actions` matches it and none of
/// `not_actions` does. Patterns match case-insensitively with `*` for any run of characters,
/// as ARM's do (`*`, `Microsoft.Authorization/*`, `*/write`).
pub fn permits(actions: &[String], not_actions: &[String], action: &str) -> bool {
    let action = action.to_ascii_lowercase();
    let matches = |p: &String| wildcard_match(&p.to_ascii_lowercase(), &action);
    actions.iter().any(matches) && !not_actions.iter().any(matches)
}

/// `*` matches any run of characters (slashes included).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn privilege_is_the_right_to_write_role_assignments() {
        let v = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        for (actions, not_actions, privileged) in [
            (v(&["*"]), v(&[]), true),                                   // Owner
            (v(&["*/read", "Microsoft.Authorization/*"]), v(&[]), true), // User Access Administrator
            (
                v(&["Microsoft.Authorization/roleAssignments/write"]),
                v(&[]),
                true,
            ),
            (v(&["microsoft.authorization/*/WRITE"]), v(&[]), true),
            (v(&["*"]), v(&["Microsoft.Authorization/*/Write"]), false), // Contributor
            (v(&["*/read"]), v(&[]), false),                             // Reader
            (v(&["Microsoft.Storage/*"]), v(&[]), false),
            (
                v(&["Microsoft.Authorization/roleAssignments/read"]),
                v(&[]),
                false,
            ),
        ] {
            assert_eq!(
                permits(&actions, &not_actions, ROLE_ASSIGNMENT_WRITE),
                privileged,
                "{actions:?} - {not_actions:?}"
            );
        }
        for role in PRIVILEGED_BUILT_IN_ROLES {
            assert!(RoleCatalogue::builtin().name_of(&role).is_some(), "{role}");
        }
    }

    const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn guid(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    fn resolve(c: &RoleCatalogue, s: &str) -> Result<ResolvedRole, RoleError> {
        c.resolve(&RoleRef::parse(s).unwrap())
    }

    #[test]
    fn catalogue_is_well_formed() {
        let mut names = HashSet::new();
        let mut guids = HashSet::new();
        for role in BUILT_IN_ROLES {
            let g = Uuid::try_parse(role.guid).unwrap();
            assert_eq!(
                g.to_string(),
                role.guid,
                "GUIDs are written lowercase hyphenated"
            );
            assert!(
                names.insert(role.name.to_lowercase()),
                "duplicate {}",
                role.name
            );
            assert!(guids.insert(g), "duplicate {}", role.guid);
            assert!(!role.description.is_empty());
        }
        let catalogue = RoleCatalogue::builtin();
        for role in BUILT_IN_ROLES {
            assert_eq!(catalogue.name_of(&guid(role.guid)), Some(role.name));
        }
    }

    #[test]
    fn required_built_ins_are_present_with_their_real_guids() {
        let c = RoleCatalogue::builtin();
        for (name, id) in [
            ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
            ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c"),
            ("Reader", READER),
            (
                "User Access Administrator",
                "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
            ),
            (
                "Role Based Access Control Administrator",
                "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
            ),
            (
                "Storage Blob Data Reader",
                "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
            ),
            (
                "Storage Blob Data Contributor",
                "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
            ),
            (
                "Storage Blob Data Owner",
                "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
            ),
            (
                "Storage Queue Data Contributor",
                "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
            ),
            (
                "Key Vault Secrets User",
                "4633458b-17de-408a-b874-0445c86b69e6",
            ),
            (
                "Key Vault Secrets Officer",
                "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
            ),
            (
                "Key Vault Administrator",
                "00482a5a-887f-4fb3-b363-3b7fe8e74483",
            ),
            ("Key Vault Reader", "21090545-7ca7-4776-b22c-e363652d74d2"),
            ("AcrPull", "7f951dda-4ed3-4680-a7ca-43fe172d538d"),
            ("AcrPush", "8311e382-0749-4cb8-b61a-304f252e45ec"),
            (
                "Azure Kubernetes Service Cluster User Role",
                "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
            ),
            (
                "Azure Kubernetes Service Cluster Admin Role",
                "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
            ),
            (
                "Managed Identity Operator",
                "f1a07417-d97a-45cb-824c-7a7467783830",
            ),
        ] {
            assert_eq!(resolve(&c, name).unwrap().guid, guid(id), "{name}");
        }
    }

    #[test]
    fn names_resolve_case_insensitively() {
        let c = RoleCatalogue::builtin();
        for name in ["Reader", "reader", "READER", "  rEaDeR  "] {
            let r = resolve(&c, name).unwrap();
            assert_eq!(r.guid, guid(READER));
            assert_eq!(r.name.as_deref(), Some("Reader"), "canonical spelling");
        }
    }

    #[test]
    fn name_guid_and_ids_resolve_to_the_same_guid() {
        let c = RoleCatalogue::builtin();
        let forms = [
            "Storage Blob Data Reader".to_owned(),
            "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1".to_owned(),
            "2A2B9908-6EA1-4AE2-8E65-A410DF84E7D1".to_owned(),
            format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"),
            format!("/SUBSCRIPTIONS/{SUB}/providers/microsoft.authorization/ROLEDEFINITIONS/2A2B9908-6EA1-4AE2-8E65-A410DF84E7D1/"),
            "/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1".to_owned(),
            "/providers/Microsoft.Management/managementGroups/mg/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1".to_owned(),
        ];
        for form in &forms {
            let r = resolve(&c, form).unwrap();
            assert_eq!(
                r.guid,
                guid("2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"),
                "{form}"
            );
            assert_eq!(
                r.name.as_deref(),
                Some("Storage Blob Data Reader"),
                "{form}"
            );
        }
    }

    #[test]
    fn parse_classifies() {
        assert_eq!(RoleRef::parse(READER), Ok(RoleRef::Guid(guid(READER))));
        assert_eq!(
            RoleRef::parse(&format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
            )),
            Ok(RoleRef::DefinitionId {
                scope: Some(ArmId::parse(&format!("/subscriptions/{SUB}")).unwrap()),
                guid: guid(READER)
            })
        );
        assert_eq!(
            RoleRef::parse(&format!(
                "/providers/Microsoft.Authorization/roleDefinitions/{READER}"
            )),
            Ok(RoleRef::DefinitionId {
                scope: None,
                guid: guid(READER)
            })
        );
        // Only the canonical GUID shape is a GUID; the rest are (unknown) names.
        for s in [
            "acdd72a733854 8efbd42f606fba81ae7",
            "acdd72a7338548efbd42f606fba81ae7",
            "{acdd72a7-3385-48ef-bd42-f606fba81ae7}",
            "acdd72a7-3385-48ef-bd42-f606fba81ae",
        ] {
            assert_eq!(RoleRef::parse(s), Ok(RoleRef::Name(s.to_owned())));
        }
        assert_eq!(
            RoleRef::parse("  Reader\t"),
            Ok(RoleRef::Name("Reader".into()))
        );
        assert_eq!(
            RoleRef::parse("Rôle personnalisé"),
            Ok(RoleRef::Name("Rôle personnalisé".into()))
        );
    }

    #[test]
    fn parse_rejects_with_reasons() {
        assert_eq!(RoleRef::parse(""), Err(RoleError::Empty));
        assert_eq!(RoleRef::parse(" \t "), Err(RoleError::Empty));
        let reason = |s: &str| match RoleRef::parse(s) {
            Err(RoleError::Malformed { reason, .. }) => reason,
            other => panic!("{s:?} gave {other:?}"),
        };
        assert!(reason(&"x".repeat(MAX_ROLE_LEN + 1)).contains("maximum is 512"));
        assert!(RoleRef::parse(&"x".repeat(MAX_ROLE_LEN)).is_ok());
        assert!(reason("Storage\u{0}Reader").contains("control"));
        assert!(reason("/subscriptions//providers").contains("doubled slash"));
        assert!(
            reason(&format!("/subscriptions/{SUB}/resourceGroups/rg"))
                .contains("roleDefinitions/<guid>")
        );
        assert!(
            reason(&format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{READER}"
            ))
            .contains("roleDefinitions/<guid>")
        );
        assert!(
            reason(&format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/reader"
            ))
            .contains("not a GUID")
        );
        assert!(reason(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Authorization/roleDefinitions/{READER}")).contains("not at"));
        let err = RoleRef::parse("/x").unwrap_err();
        assert!(
            err.to_string().starts_with("role `/x` is malformed"),
            "{err}"
        );
    }

    #[test]
    fn unknown_names_are_named() {
        let c = RoleCatalogue::builtin();
        assert_eq!(
            resolve(&c, "Storage Blob Data Raeder"),
            Err(RoleError::Unknown {
                name: "Storage Blob Data Raeder".into()
            })
        );
        assert_eq!(
            RoleError::Unknown { name: "X".into() }.to_string(),
            "role `X` is not a known role name"
        );
        // Unknown GUIDs still resolve: ARM decides whether the definition exists.
        let custom = guid("11111111-2222-3333-4444-555555555555");
        assert_eq!(
            c.resolve(&RoleRef::Guid(custom)),
            Ok(ResolvedRole {
                guid: custom,
                name: None
            })
        );
    }

    #[test]
    fn custom_roles_join_the_catalogue() {
        let mut c = RoleCatalogue::builtin();
        let custom = guid("11111111-2222-3333-4444-555555555555");
        c.insert("Backup Runner", custom);
        assert_eq!(resolve(&c, "backup runner").unwrap().guid, custom);
        assert_eq!(c.name_of(&custom), Some("Backup Runner"));
        // Re-inserting the same pair (every ARM refresh) changes nothing.
        c.insert("Backup Runner", custom);
        assert_eq!(resolve(&c, "Backup Runner").unwrap().guid, custom);
    }

    #[test]
    fn a_name_cannot_be_redirected_to_another_guid() {
        let mut c = RoleCatalogue::builtin();
        let impostor = guid("11111111-2222-3333-4444-555555555555");
        c.insert("owner", impostor);
        assert_eq!(
            resolve(&c, "Owner"),
            Err(RoleError::Ambiguous {
                name: "Owner".into()
            })
        );
        // Both GUIDs keep resolving to themselves.
        let owner = guid("8e3af657-a8ff-443c-a75c-2fe8c4bcb635");
        assert_eq!(
            c.resolve(&RoleRef::Guid(owner)).unwrap().name.as_deref(),
            Some("Owner")
        );
        assert_eq!(c.resolve(&RoleRef::Guid(impostor)).unwrap().guid, impostor);
    }

    #[test]
    fn definition_ids_are_built_for_arm() {
        assert_eq!(
            role_definition_id(SUB, &guid("ACDD72A7-3385-48EF-BD42-F606FBA81AE7")),
            format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
            )
        );
        let id = role_definition_id(SUB, &guid(READER));
        let parsed = RoleRef::parse(&id).unwrap();
        assert_eq!(parsed.to_string(), id);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn every_form_of_a_built_in_resolves_alike(
            i in 0..BUILT_IN_ROLES.len(),
            upper in any::<bool>(),
            tenant in any::<bool>(),
        ) {
            let c = RoleCatalogue::builtin();
            let role = BUILT_IN_ROLES[i];
            let expected = guid(role.guid);
            let case = |s: &str| if upper { s.to_uppercase() } else { s.to_lowercase() };
            let id = if tenant {
                format!("/providers/Microsoft.Authorization/roleDefinitions/{}", case(role.guid))
            } else {
                role_definition_id(SUB, &expected)
            };
            for form in [case(role.name), case(role.guid), id] {
                let r = resolve(&c, &form).unwrap();
                prop_assert_eq!(r.guid, expected);
                prop_assert_eq!(r.name.as_deref(), Some(role.name));
            }
        }

        #[test]
        fn display_parse_round_trips(r in prop_oneof![
            "[A-Za-z][A-Za-z0-9 ]{0,30}[A-Za-z0-9]".prop_map(RoleRef::Name),
            any::<u128>().prop_map(|u| RoleRef::Guid(Uuid::from_u128(u))),
            (any::<u128>(), any::<bool>()).prop_map(|(u, sub)| RoleRef::DefinitionId {
                scope: sub.then(|| ArmId::parse(&format!("/subscriptions/{SUB}")).unwrap()),
                guid: Uuid::from_u128(u),
            }),
        ]) {
            prop_assert_eq!(RoleRef::parse(&r.to_string()), Ok(r));
        }
    }
}
