//! Management locks that apply to a grant before it activates (DESIGN §12 "Locks"). A
//! `CanNotDelete` or `ReadOnly` lock at or above a scope lets Azure create a role assignment
//! there but not delete it, and one at or above a managed identity does the same to its
//! federated credentials (children of the identity): lapse must not create what it could not
//! remove. The core denies on what this finds unless the allowing policy tolerates locks.

use lapse_api::arm::ArmId;
use lapse_api::lock::LockObservation;
use lapse_api::validate::{GrantRequest, Identity};

use crate::context::Context;

/// The scopes whose locks matter: every role's scope, and the managed identity when the grant
/// federates it (an app registration is not an ARM resource and has no locks; without a FIC
/// nothing is created under the identity). Deduplicated, case-insensitively.
pub fn scopes(req: &GrantRequest) -> Vec<ArmId> {
    let mut out: Vec<ArmId> = req.roles.iter().map(|r| r.scope.clone()).collect();
    if let (Identity::ManagedIdentity(id), Some(_)) = (&req.identity, &req.federation) {
        out.push(id.clone());
    }
    out.sort_by(|a, b| a.key().cmp(b.key()));
    out.dedup_by(|a, b| a.key() == b.key());
    out
}

/// The locks that apply at any of the grant's scopes, read fresh (an activation is when it
/// matters). A scope that does not exist has none; any other failed read makes the answer
/// unknown, so the grant waits rather than guesses.
pub async fn observe(ctx: &Context, req: &GrantRequest) -> LockObservation {
    let mut found = Vec::new();
    for scope in scopes(req) {
        match ctx.azure.list_locks(scope.as_str()).await {
            Ok(locks) => found.extend(locks),
            // The scope does not exist (ResourceGroupNotFound, ResourceNotFound, ...): nothing
            // is locked there, and the create will fail with Azure's own answer.
            Err(e) if e.status() == Some(404) => {
                tracing::debug!(scope = %scope, error = %e, "no management locks at a scope that does not exist");
            }
            Err(e) => {
                tracing::warn!(scope = %scope, error = %e, "listing the management locks of a grant's scope");
                return LockObservation::Unknown;
            }
        }
    }
    LockObservation::known(found)
}

#[cfg(test)]
mod tests {
    use lapse_api::v1alpha1::{AccessGrantSpec, Federation, IdentityRef, RoleRequest};
    use lapse_api::validate::validate_grant;

    use super::*;

    const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg";

    fn request(federated: bool, app: bool) -> GrantRequest {
        let spec = AccessGrantSpec {
            identity: if app {
                IdentityRef {
                    application: Some(lapse_api::v1alpha1::ObjectIdRef {
                        object_id: "3fa85f64-5717-4562-b3fc-2c963f66afa6".into(),
                    }),
                    ..Default::default()
                }
            } else {
                IdentityRef {
                    managed_identity: Some(format!(
                        "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi"
                    )),
                    ..Default::default()
                }
            },
            roles: vec![
                RoleRequest {
                    role: "Reader".into(),
                    scope: RG.into(),
                    condition: None,
                },
                RoleRequest {
                    role: "Storage Blob Data Reader".into(),
                    scope: RG.to_uppercase().replace("SUBSCRIPTIONS", "subscriptions"),
                    condition: None,
                },
            ],
            federation: federated.then(|| {
                Box::new(Federation {
                    service_account: "runner".into(),
                    audience: lapse_api::v1alpha1::DEFAULT_AUDIENCE.into(),
                })
            }),
            duration: Some("1h".into()),
            ..Default::default()
        };
        match validate_grant(&spec) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_scopes_are_the_roles_scopes_and_a_federated_identity() {
        let keys = |r: &GrantRequest| {
            scopes(r)
                .iter()
                .map(|s| s.key().to_owned())
                .collect::<Vec<_>>()
        };
        let rg = RG.to_ascii_lowercase();
        assert_eq!(keys(&request(false, false)), std::slice::from_ref(&rg));
        assert_eq!(
            keys(&request(true, false)),
            [
                rg.clone(),
                format!("{rg}/providers/microsoft.managedidentity/userassignedidentities/mi")
            ]
        );
        // An app registration has no ARM locks.
        assert_eq!(keys(&request(true, true)), [rg]);
    }
}
