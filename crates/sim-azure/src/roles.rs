//! Azure built-in role definitions the simulator serves. Names and GUIDs are Azure's (verified
//! against several public sources); permissions follow Microsoft's built-in roles reference;
//! `createdOn`/`updatedOn` are the dates Azure answers with (Microsoft Learn examples and
//! captured answers; docs/sim-azure.md lists the source of each, and the few approximated).

/// One built-in role definition as Azure serves it (permissions and dates included); not
/// lapse-api's `BuiltInRole`, which is only a role's name and GUID for the operator's catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltInRoleDefinition {
    /// Role definition GUID (the same in every tenant).
    pub id: &'static str,
    /// `roleName`.
    pub name: &'static str,
    /// `description`.
    pub description: &'static str,
    /// `permissions[0].actions`.
    pub actions: &'static [&'static str],
    /// `permissions[0].notActions`.
    pub not_actions: &'static [&'static str],
    /// `permissions[0].dataActions`.
    pub data_actions: &'static [&'static str],
    /// `permissions[0].notDataActions`.
    pub not_data_actions: &'static [&'static str],
    /// `createdOn` as Azure answers it (the simulator serves it verbatim; see
    /// docs/sim-azure.md for where each date comes from and which are approximations).
    pub created_on: &'static str,
    /// `updatedOn` as Azure answers it.
    pub updated_on: &'static str,
}

const KEY_VAULT_CONTROL_PLANE_READ: &[&str] = &[
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
];

const BUILT_IN_ROLE_DEFINITIONS: &[BuiltInRoleDefinition] = &[
    BuiltInRoleDefinition {
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        name: "Owner",
        created_on: "2015-02-02T21:55:09.8806423Z",
        updated_on: "2020-08-14T20:13:58.4137852Z",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        name: "Contributor",
        created_on: "2015-02-02T21:55:09.88Z",
        updated_on: "2024-11-21T20:29:48.368Z",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share image galleries.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
            "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "17d1049b-9a84-46fb-8f53-869881c3d3ab",
        name: "Storage Account Contributor",
        created_on: "2015-06-02T00:18:27.3542698Z",
        updated_on: "2025-01-23T16:19:06.4437806Z",
        description: "Permits management of storage accounts. Provides access to the account key, which can be used to access data via Shared Key authorization.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Insights/diagnosticSettings/*",
            "Microsoft.Network/virtualNetworks/subnets/joinViaServiceEndpoint/action",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Storage/storageAccounts/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        name: "Reader",
        created_on: "2015-02-02T21:55:09.8806423Z",
        updated_on: "2021-11-11T20:13:47.8628684Z",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        name: "User Access Administrator",
        created_on: "2015-02-02T21:55:09.8806423Z",
        updated_on: "2021-11-11T20:13:57Z",
        description: "Lets you manage user access to Azure resources.",
        actions: &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        name: "Role Based Access Control Administrator",
        created_on: "2022-09-06T22:26:26.407Z",
        updated_on: "2023-11-10T21:06:25.701Z",
        description: "Manage access to Azure resources by assigning roles using Azure RBAC. This role does not allow you to manage access using other ways, such as Azure Policy.",
        actions: &[
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        name: "Storage Blob Data Reader",
        created_on: "2017-12-21T00:01:24.797Z",
        updated_on: "2021-11-11T20:13:55.297Z",
        description: "Read and list Azure Storage containers and blobs.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        name: "Storage Blob Data Contributor",
        created_on: "2017-12-21T00:01:24.7972312Z",
        updated_on: "2021-11-11T20:13:54.9397456Z",
        description: "Read, write, and delete Azure Storage containers and blobs.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
        ],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        name: "Storage Blob Data Owner",
        created_on: "2017-12-21T00:01:24.7972312Z",
        updated_on: "2021-11-11T20:13:54.9397456Z",
        description: "Provides full access to Azure Storage blob containers and data, including assigning POSIX access control.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/*",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*"],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "4633458b-17de-408a-b874-0445c86b69e6",
        name: "Key Vault Secrets User",
        created_on: "2020-05-19T17:52:46.234Z",
        updated_on: "2021-11-11T20:14:30.254Z",
        description: "Read secret contents. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        name: "Key Vault Secrets Officer",
        created_on: "2020-05-19T17:52:46.234Z",
        updated_on: "2021-11-11T20:14:30.254Z",
        description: "Perform any action on the secrets of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KEY_VAULT_CONTROL_PLANE_READ,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        name: "Key Vault Administrator",
        created_on: "2020-05-19T17:52:46.234Z",
        updated_on: "2021-11-11T20:14:30.254Z",
        description: "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and secrets. Cannot manage key vault resources or manage role assignments. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KEY_VAULT_CONTROL_PLANE_READ,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "21090545-7ca7-4776-b22c-e363652d74d2",
        name: "Key Vault Reader",
        created_on: "2020-05-19T17:52:46.234Z",
        updated_on: "2021-11-11T20:14:30.254Z",
        description: "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as secret contents or key material. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KEY_VAULT_CONTROL_PLANE_READ,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "7f951dda-4ed3-4680-a7ca-43fe172d538d",
        name: "AcrPull",
        created_on: "2018-10-22T19:01:56.822Z",
        updated_on: "2021-11-11T20:13:08.877Z",
        description: "acr pull",
        actions: &["Microsoft.ContainerRegistry/registries/pull/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "8311e382-0749-4cb8-b61a-304f252e45ec",
        name: "AcrPush",
        created_on: "2018-10-29T17:52:32.5201177Z",
        updated_on: "2021-11-11T20:13:07.4993029Z",
        description: "acr push",
        actions: &[
            "Microsoft.ContainerRegistry/registries/pull/read",
            "Microsoft.ContainerRegistry/registries/push/write",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
        name: "Azure Kubernetes Service Cluster User Role",
        created_on: "2018-08-15T22:04:53.403Z",
        updated_on: "2021-11-11T20:13:20.435Z",
        description: "List cluster user credential action.",
        actions: &[
            "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
            "Microsoft.ContainerService/managedClusters/read",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
        name: "Azure Kubernetes Service Cluster Admin Role",
        created_on: "2018-08-15T21:38:18Z",
        updated_on: "2022-05-17T01:51:12Z",
        description: "List cluster admin credential action.",
        actions: &[
            "Microsoft.ContainerService/managedClusters/listClusterAdminCredential/action",
            "Microsoft.ContainerService/managedClusters/accessProfiles/listCredential/action",
            "Microsoft.ContainerService/managedClusters/read",
            "Microsoft.ContainerService/managedClusters/runcommand/action",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "f1a07417-d97a-45cb-824c-7a7467783830",
        name: "Managed Identity Operator",
        created_on: "2017-12-14T19:52:04.392Z",
        updated_on: "2021-11-11T20:13:38.952Z",
        description: "Read and Assign User Assigned Identity",
        actions: &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltInRoleDefinition {
        id: "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
        name: "Managed Identity Contributor",
        created_on: "2017-12-14T19:53:42.88Z",
        updated_on: "2024-04-02T15:41:08.379Z",
        description: "Create, Read, Update, and Delete User Assigned Identity",
        actions: &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
];

/// The built-in role definitions every simulated tenant starts with.
pub fn built_in_role_definitions() -> &'static [BuiltInRoleDefinition] {
    BUILT_IN_ROLE_DEFINITIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_unique_guid_ids_and_names() {
        let roles = built_in_role_definitions();
        for (i, r) in roles.iter().enumerate() {
            assert!(crate::ids::is_guid(r.id), "{} has id {}", r.name, r.id);
            for other in &roles[i + 1..] {
                assert_ne!(r.id, other.id);
                assert_ne!(r.name, other.name);
            }
        }
        for name in [
            "Owner",
            "Contributor",
            "Reader",
            "User Access Administrator",
            "Role Based Access Control Administrator",
            "Storage Blob Data Reader",
            "Storage Blob Data Contributor",
            "Storage Blob Data Owner",
            "Key Vault Secrets User",
            "Key Vault Secrets Officer",
            "Key Vault Administrator",
            "Key Vault Reader",
            "AcrPull",
            "AcrPush",
            "Azure Kubernetes Service Cluster User Role",
            "Azure Kubernetes Service Cluster Admin Role",
            "Managed Identity Operator",
        ] {
            assert!(roles.iter().any(|r| r.name == name), "missing {name}");
        }
    }

    #[test]
    fn dates_are_rfc3339_and_updates_follow_creation() {
        for r in built_in_role_definitions() {
            let created = chrono::DateTime::parse_from_rfc3339(r.created_on)
                .unwrap_or_else(|e| panic!("{}: createdOn {}: {e}", r.name, r.created_on));
            let updated = chrono::DateTime::parse_from_rfc3339(r.updated_on)
                .unwrap_or_else(|e| panic!("{}: updatedOn {}: {e}", r.name, r.updated_on));
            assert!(created <= updated, "{}", r.name);
        }
    }
}
