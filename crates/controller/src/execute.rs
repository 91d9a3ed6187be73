//! Makes the calls the decision core asked for and reports what happened, in the core's terms.

use lapse_api::lease::{Action, FicTarget, Holder, ObjectKey, Observed};
use lapse_azure::{AzureError, ErrorClass, FicRequest, RoleAssignmentRequest};

use crate::context::Context;
use crate::inventory::Known;
use crate::outcome::{failure, standing_assignment};

/// Whether a role assignment ARM refused to delete is gone: its subscription's list of the
/// principal's assignments no longer names it. `None` when that could not be read.
async fn assignment_gone(ctx: &Context, key: &ObjectKey, name: &uuid::Uuid) -> Option<bool> {
    let ObjectKey::RoleAssignment {
        principal_id,
        scope,
        ..
    } = key
    else {
        return None;
    };
    let sub = scope
        .strip_prefix("/subscriptions/")?
        .split('/')
        .next()?
        .to_owned();
    let list = ctx
        .azure
        .list_role_assignments(&sub, Some(principal_id))
        .await;
    match list {
        Ok(list) => Some(!list.iter().any(|ra| ra.name == *name)),
        Err(e) => {
            tracing::warn!(subscription = %sub, error = %e, "checking whether a role assignment is gone");
            None
        }
    }
}

/// Executes one action. Deletes are idempotent; a create that finds the access already there
/// under another name reports it as standing (or ours, by its marker) instead of failing.
pub async fn execute(ctx: &Context, action: &Action) -> Observed {
    match action {
        Action::CreateRoleAssignment(p) => {
            if let Some(schedule) = p.schedule {
                return crate::pim::assign(ctx, p, schedule).await;
            }
            let req = RoleAssignmentRequest {
                scope: p.scope.to_string(),
                name: p.name,
                role_definition_id: p.role_definition_id.clone(),
                principal_id: p.principal_id,
                description: Some(p.description.clone()),
                condition: p.condition.clone(),
            };
            match ctx.azure.put_role_assignment(&req).await {
                Ok(ra) => {
                    ctx.inventory.record(
                        &p.key,
                        Some(Known {
                            id: ra.id.clone(),
                            owned: true,
                            schedule: None,
                            holder: Holder::Unmarked,
                        }),
                    );
                    Observed::Present {
                        owned: true,
                        id: Some(ra.id),
                    }
                }
                Err(e) if e.code() == Some("RoleAssignmentExists") => {
                    standing_assignment(ctx, &p.key, &p.scope, &e).await
                }
                Err(e) => {
                    tracing::warn!(scope = %p.scope, name = %p.name, error = %e, "creating a role assignment");
                    Observed::CreateFailed(failure(&e))
                }
            }
        }
        Action::RescheduleRoleAssignment(r) => crate::pim::reschedule(ctx, r).await,
        Action::DeleteRoleAssignment {
            key,
            schedule_start: Some(start),
            ..
        } => crate::pim::remove(ctx, action, key, *start).await,
        Action::DeleteRoleAssignment {
            key, scope, name, ..
        } => match ctx.azure.delete_role_assignment(scope, name).await {
            Ok(_) => {
                ctx.inventory.record(key, None);
                Observed::Absent
            }
            Err(e) => {
                tracing::warn!(%scope, %name, error = %e, "deleting a role assignment");
                if e.code() == Some("AuthorizationFailed")
                    && assignment_gone(ctx, key, name).await == Some(true)
                {
                    // "...or the scope is invalid": the scope was deleted, and the assignment
                    // with it. Settled, not retried forever.
                    tracing::info!(%scope, %name, "the scope is gone and the assignment with it");
                    ctx.inventory.record(key, None);
                    return Observed::Absent;
                }
                crate::blocked::delete_failed(ctx, action, &e, failure(&e)).await
            }
        },
        Action::CreateFic(p) => {
            let req = FicRequest {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                subject: p.subject.clone(),
                audiences: vec![p.audience.clone()],
                description: Some(p.description.clone()),
            };
            let result = match &p.target {
                FicTarget::ManagedIdentity(id) => ctx.azure.put_fic(id, &req).await,
                FicTarget::Application(app) => ctx.azure.put_app_fic(app, &req).await,
            };
            match result {
                Ok(f) => {
                    ctx.inventory.record(
                        &p.key,
                        Some(Known {
                            id: f.id.clone(),
                            owned: true,
                            schedule: None,
                            holder: Holder::Unmarked,
                        }),
                    );
                    Observed::Present {
                        owned: true,
                        id: Some(f.id),
                    }
                }
                Err(e) => {
                    tracing::warn!(fic = %p.name, error = %e, "creating a federated identity credential");
                    // Issuer and subject already federated under another name: look before failing.
                    if e.class() == ErrorClass::Terminal {
                        match existing_fic(ctx, &p.key, &p.target).await {
                            Ok(Some(obs)) => return obs,
                            Ok(None) => {}
                            // Whether it exists is unknown: neither refused nor created.
                            Err(le) => {
                                tracing::warn!(fic = %p.name, error = %le, "listing federated identity credentials after a refused create");
                                return Observed::CreateFailed(failure(&le));
                            }
                        }
                    }
                    Observed::CreateFailed(failure(&e))
                }
            }
        }
        Action::DeleteFic { key, target, name } => {
            let result = match target {
                FicTarget::ManagedIdentity(id) => ctx.azure.delete_fic(id, name).await,
                FicTarget::Application(app) => ctx.azure.delete_app_fic(app, name).await,
            };
            match result {
                Ok(_) => {
                    ctx.inventory.record(key, None);
                    Observed::Absent
                }
                Err(e) => {
                    tracing::warn!(fic = %name, error = %e, "deleting a federated identity credential");
                    crate::blocked::delete_failed(ctx, action, &e, failure(&e)).await
                }
            }
        }
    }
}

/// After a refused FIC create: is the (issuer, subject) already federated on the target?
async fn existing_fic(
    ctx: &Context,
    key: &ObjectKey,
    target: &FicTarget,
) -> Result<Option<Observed>, AzureError> {
    let list = match target {
        FicTarget::ManagedIdentity(id) => ctx.azure.list_fics(id).await,
        FicTarget::Application(app) => ctx.azure.list_app_fics(app).await,
    }?;
    let target_key = target.key();
    Ok(list.into_iter().find_map(|f| {
        let k = ObjectKey::Fic {
            target: target_key.clone(),
            issuer: f.issuer.clone(),
            subject: f.subject.clone(),
        };
        (&k == key).then(|| {
            let owned = ctx.core.owner.owns_fic(
                &f.name,
                &target_key,
                &f.issuer,
                &f.subject,
                &ctx.core.oidc_issuer,
            );
            ctx.inventory.record(
                key,
                Some(Known {
                    id: f.id.clone(),
                    owned,
                    schedule: None,
                    holder: Holder::of(f.description.as_deref(), Some(&f.name)),
                }),
            );
            Observed::Present {
                owned,
                id: Some(f.id),
            }
        })
    }))
}
