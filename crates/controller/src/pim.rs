//! The calls of Azure-enforced expiry (`azure.expiry: PIM`): role assignments requested,
//! moved and removed through PIM's `roleAssignmentScheduleRequests` instead of created and
//! deleted (docs/security.md, "When access really ends").

use lapse_api::arm::ArmId;
use lapse_api::lease::{
    Action, AssignmentSchedule, Failure, ObjectKey, Observed, Reschedule, RoleAssignmentPlan,
};
use lapse_api::naming::{SCHEDULE_ASSIGN, SCHEDULE_EXTEND, SCHEDULE_REMOVE, SCHEDULE_UPDATE};
use lapse_azure::{ScheduleRequest, ScheduleRequestType};
use uuid::Uuid;

use crate::context::Context;
use crate::inventory::Known;
use crate::outcome::failure;
use lapse_api::lease::Holder;

/// Azure's answer to a request about an assignment that is not there.
const DOES_NOT_EXIST: &str = "RoleAssignmentDoesNotExist";

/// The tuple of a role assignment key.
fn tuple(key: &ObjectKey) -> Option<(Uuid, Uuid, ArmId)> {
    match key {
        ObjectKey::RoleAssignment {
            principal_id,
            role_guid,
            scope,
        } => Some((*principal_id, *role_guid, ArmId::parse(scope).ok()?)),
        ObjectKey::Fic { .. } => None,
    }
}

/// `AdminAssign` with the plan's schedule. The request's name is derived from the schedule's
/// start, so the same request made again (a lost answer) is the same request to Azure.
pub async fn assign(
    ctx: &Context,
    p: &RoleAssignmentPlan,
    schedule: AssignmentSchedule,
) -> Observed {
    let name = ctx.core.owner.schedule_request_name(
        SCHEDULE_ASSIGN,
        &p.principal_id,
        &p.role_guid,
        &p.scope,
        schedule.starts_at,
    );
    let req = ScheduleRequest {
        scope: p.scope.to_string(),
        name,
        request_type: ScheduleRequestType::AdminAssign,
        principal_id: p.principal_id,
        role_definition_id: p.role_definition_id.clone(),
        starts_at: Some(schedule.starts_at),
        ends_at: Some(schedule.ends_at),
        // The ownership marker, for people reading PIM's history; ownership itself is the
        // request's derived name.
        justification: Some(p.description.clone()),
        condition: p.condition.clone(),
    };
    match ctx.azure.put_schedule_request(&req).await {
        Ok(record) => {
            let id = record.target_schedule_id.unwrap_or(record.id);
            ctx.inventory.record(
                &p.key,
                Some(Known {
                    id: id.clone(),
                    owned: true,
                    schedule: Some(schedule),
                    holder: Holder::Unmarked,
                }),
            );
            Observed::Present {
                owned: true,
                id: None,
            }
        }
        Err(e) if e.code() == Some("RoleAssignmentExists") => {
            crate::outcome::standing_assignment(ctx, &p.key, &p.scope, &e).await
        }
        Err(e) => {
            tracing::warn!(scope = %p.scope, request = %name, error = %e, "requesting a role assignment through PIM");
            Observed::CreateFailed(failure(&e))
        }
    }
}

/// `AdminExtend` (later) or `AdminUpdate` (earlier) to the new end, named from it.
pub async fn reschedule(ctx: &Context, r: &Reschedule) -> Observed {
    let (kind, request_type) = if r.extend {
        (SCHEDULE_EXTEND, ScheduleRequestType::AdminExtend)
    } else {
        (SCHEDULE_UPDATE, ScheduleRequestType::AdminUpdate)
    };
    let name = ctx.core.owner.schedule_request_name(
        kind,
        &r.principal_id,
        &r.role_guid,
        &r.scope,
        r.ends_at,
    );
    let held = ctx.inventory.schedule_of(&r.key);
    let req = ScheduleRequest {
        scope: r.scope.to_string(),
        name,
        request_type,
        principal_id: r.principal_id,
        role_definition_id: r.role_definition_id.clone(),
        starts_at: held.map(|s| s.starts_at),
        ends_at: Some(r.ends_at),
        justification: None,
        condition: None,
    };
    match ctx.azure.put_schedule_request(&req).await {
        Ok(_) => {
            if let Some(held) = held {
                let moved = AssignmentSchedule {
                    ends_at: r.ends_at,
                    ..held
                };
                let id = format!(
                    "{}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{name}",
                    r.scope
                );
                ctx.inventory.record(
                    &r.key,
                    Some(Known {
                        id,
                        owned: true,
                        schedule: Some(moved),
                        holder: Holder::Unmarked,
                    }),
                );
            }
            Observed::Present {
                owned: true,
                id: None,
            }
        }
        // Gone behind our back (Azure ended it, or someone removed it): a repair, not a move.
        Err(e) if e.code() == Some(DOES_NOT_EXIST) => {
            ctx.inventory.record(&r.key, None);
            Observed::Absent
        }
        Err(e) => {
            tracing::warn!(scope = %r.scope, request = %name, error = %e, "moving a PIM assignment's end");
            Observed::RescheduleFailed(failure(&e))
        }
    }
}

/// `AdminRemove`, named from the schedule's start: removing again after a lost answer is the
/// same request. An assignment already gone is settled.
pub async fn remove(
    ctx: &Context,
    action: &Action,
    key: &ObjectKey,
    start: chrono::DateTime<chrono::Utc>,
) -> Observed {
    let Some((principal_id, role_guid, scope)) = tuple(key) else {
        return Observed::DeleteFailed(Failure::Terminal {
            code: "InvalidKey".into(),
            message: format!("{key:?} is not a role assignment"),
        });
    };
    let name = ctx.core.owner.schedule_request_name(
        SCHEDULE_REMOVE,
        &principal_id,
        &role_guid,
        &scope,
        start,
    );
    let role_definition_id = lapse_api::lease::definition_id_for(&scope, &role_guid);
    let req = ScheduleRequest {
        scope: scope.to_string(),
        name,
        request_type: ScheduleRequestType::AdminRemove,
        principal_id,
        role_definition_id,
        starts_at: None,
        ends_at: None,
        justification: None,
        condition: None,
    };
    match ctx.azure.put_schedule_request(&req).await {
        Ok(_) => {
            ctx.inventory.record(key, None);
            Observed::Absent
        }
        Err(e) if e.code() == Some(DOES_NOT_EXIST) => {
            ctx.inventory.record(key, None);
            Observed::Absent
        }
        Err(e) => {
            tracing::warn!(%scope, request = %name, error = %e, "removing a PIM assignment");
            // A lock refuses it as it refuses a delete: named the same way.
            crate::blocked::delete_failed(ctx, action, &e, failure(&e)).await
        }
    }
}
