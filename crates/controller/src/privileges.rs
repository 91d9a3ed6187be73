//! What an identity may already do in Azure before a grant federates it. A federated credential
//! lets the workload act as the identity with *all* its rights, not only the lease's roles, so
//! an identity that can write role assignments would let the workload make itself standing
//! access that outlives any lease. Such identities are federated only where a policy opts in.

use lapse_api::arm::ArmId;
use lapse_api::lease::{PrivilegeObservation, StandingPrivilege};
use lapse_api::role::{PRIVILEGED_BUILT_IN_ROLES, ROLE_ASSIGNMENT_WRITE, permits};
use lapse_api::validate::{GrantRequest, Identity};
use uuid::Uuid;

use crate::context::Context;

/// The subscriptions whose role assignments are read: those of the grant's scopes and of the
/// identity itself. ARM's per-subscription list also returns assignments inherited from
/// management groups above it.
fn subscriptions(req: &GrantRequest, ctx: &Context) -> Vec<String> {
    let mut subs: Vec<String> = req
        .roles
        .iter()
        .filter_map(|r| r.scope.subscription().map(str::to_ascii_lowercase))
        .collect();
    if let Identity::ManagedIdentity(id) = &req.identity
        && let Some(s) = id.subscription()
    {
        subs.push(s.to_ascii_lowercase());
    }
    subs.extend(
        ctx.settings
            .sweep_subscriptions
            .iter()
            .map(|s| s.to_ascii_lowercase()),
    );
    subs.sort();
    subs.dedup();
    subs
}

/// The privileged standing roles of `principal`, read fresh from Azure (an activation is when
/// it matters). Assignments lapse itself made are leases, not standing access, and are not
/// counted. Any failed read makes the answer unknown, so the grant waits rather than guesses.
pub async fn observe(ctx: &Context, req: &GrantRequest, principal: Uuid) -> PrivilegeObservation {
    let mut held = Vec::new();
    let owner = &ctx.core.owner;
    for sub in subscriptions(req, ctx) {
        let list = ctx
            .azure
            .list_role_assignments(&sub, Some(&principal))
            .await;
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(subscription = %sub, error = %e, "listing an identity's standing roles");
                return PrivilegeObservation::Unknown;
            }
        };
        for ra in list.into_iter().filter(|ra| ra.principal_id == principal) {
            let Some(role) = ra
                .role_definition_id
                .rsplit('/')
                .next()
                .and_then(|g| Uuid::try_parse(g).ok())
            else {
                continue;
            };
            let ours = ArmId::parse(&ra.scope)
                .is_ok_and(|scope| owner.owns_role_assignment(&ra.name, &principal, &role, &scope));
            if ours {
                continue;
            }
            let privileged = if PRIVILEGED_BUILT_IN_ROLES.contains(&role) {
                true
            } else {
                match ctx.azure.role_definition_by_id(&sub, &role).await {
                    Ok(Some(def)) => def
                        .permissions
                        .iter()
                        .any(|p| permits(&p.actions, &p.not_actions, ROLE_ASSIGNMENT_WRITE)),
                    Ok(None) => false,
                    Err(e) => {
                        tracing::warn!(role = %role, error = %e, "reading a role definition's permissions");
                        return PrivilegeObservation::Unknown;
                    }
                }
            };
            if privileged {
                let catalogue = ctx.resolver.catalogue();
                held.push(StandingPrivilege {
                    assignment: ra.id.clone(),
                    role: catalogue
                        .name_of(&role)
                        .map_or_else(|| role.to_string(), str::to_owned),
                    scope: ra.scope.clone(),
                });
            }
        }
    }
    PrivilegeObservation::Known(held)
}
