//! `RightSize` at a lease's conclusion: the narrower roles its policy allows that would have
//! done everything it did. Role definitions come from ARM (cached by the client); a lease of
//! more than one role is not right-sized (which of its roles did what is not in the log).

use lapse_api::policy::NamedPolicy;
use lapse_api::usage::{RolePermissions, narrower_roles};
use lapse_api::v1alpha1::UsageStatus;
use lapse_azure::{AzureError, RoleDefinition};
use uuid::Uuid;

use super::windows::Lease;
use crate::context::Context;

fn permissions(d: &RoleDefinition) -> RolePermissions {
    RolePermissions {
        name: d.role_name.clone(),
        actions: d
            .permissions
            .iter()
            .flat_map(|p| p.actions.clone())
            .collect(),
        not_actions: d
            .permissions
            .iter()
            .flat_map(|p| p.not_actions.clone())
            .collect(),
    }
}

/// The roles to suggest instead of the lease's one, tightest first; empty when there is
/// nothing to suggest.
pub async fn narrower(
    ctx: &Context,
    lease: &Lease,
    usage: &UsageStatus,
    policies: &[NamedPolicy],
) -> Result<Vec<String>, AzureError> {
    let [role_id] = lease.roles.as_slice() else {
        return Ok(Vec::new());
    };
    if usage.operations == 0 || usage.actions_truncated {
        return Ok(Vec::new());
    }
    let Some(sub) = lease
        .window
        .scopes
        .first()
        .and_then(|s| s.subscription())
        .map(str::to_owned)
    else {
        return Ok(Vec::new());
    };
    let Some(granted) = role_id
        .rsplit('/')
        .next()
        .and_then(|g| Uuid::try_parse(g).ok())
    else {
        return Ok(Vec::new());
    };
    let Some(granted) = ctx.azure.role_definition_by_id(&sub, &granted).await? else {
        return Ok(Vec::new());
    };
    let Some(rules) = lease
        .policy
        .as_deref()
        .and_then(|p| policies.iter().find(|n| n.name == p))
        .and_then(|n| n.rules.as_ref().ok())
    else {
        return Ok(Vec::new());
    };
    let catalogue = ctx.resolver.catalogue();
    let mut candidates = Vec::new();
    for (_, role) in &rules.roles {
        let Ok(resolved) = catalogue.resolve(role) else {
            continue;
        };
        if let Some(d) = ctx
            .azure
            .role_definition_by_id(&sub, &resolved.guid)
            .await?
        {
            candidates.push(permissions(&d));
        }
    }
    let performed: Vec<&str> = usage.actions.iter().map(|a| a.action.as_str()).collect();
    Ok(narrower_roles(
        &permissions(&granted),
        &candidates,
        &performed,
    ))
}
