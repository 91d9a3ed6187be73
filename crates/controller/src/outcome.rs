//! What an Azure call's outcome means to the decision core: a failure classified in its terms,
//! and, after `RoleAssignmentExists`, whose assignment holds the tuple. Shared by the plain
//! calls (`execute`) and PIM's (`pim`).

use lapse_api::arm::ArmId;
use lapse_api::lease::{Failure, ObjectKey, Observed};
use lapse_azure::{AzureError, ErrorClass};

use crate::context::Context;

/// The core's view of an Azure failure.
pub fn failure(e: &AzureError) -> Failure {
    match e {
        AzureError::Throttled { retry_after, .. } => Failure::Throttled {
            retry_after: *retry_after,
            message: e.to_string(),
        },
        _ => match e.class() {
            ErrorClass::Terminal => Failure::Terminal {
                code: e.code().unwrap_or("Unknown").to_owned(),
                message: e.to_string(),
            },
            _ => Failure::Retryable {
                message: e.to_string(),
            },
        },
    }
}

/// After `RoleAssignmentExists`: find the assignment that holds the tuple (ours by its derived
/// name, or by the PIM request that shaped its schedule).
pub async fn standing_assignment(
    ctx: &Context,
    key: &ObjectKey,
    scope: &ArmId,
    e: &AzureError,
) -> Observed {
    let ObjectKey::RoleAssignment { principal_id, .. } = key else {
        return Observed::CreateFailed(failure(e));
    };
    let Some(sub) = scope.subscription() else {
        return Observed::CreateFailed(failure(e));
    };
    match ctx
        .azure
        .list_role_assignments(sub, Some(principal_id))
        .await
    {
        Ok(list) => {
            let schedules =
                match crate::inventory::schedules(&ctx.lister(), sub, Some(principal_id)).await {
                    Ok(s) => s,
                    Err(le) => return Observed::CreateFailed(failure(&le)),
                };
            for ra in list {
                if crate::inventory::assignment_key(&ra).as_ref() == Some(key) {
                    let known =
                        crate::inventory::known_assignment(&ctx.core.owner, &ra, key, &schedules);
                    let owned = known.owned;
                    ctx.inventory.record(key, Some(known));
                    return Observed::Present {
                        owned,
                        id: Some(ra.id),
                    };
                }
            }
            // Azure says it exists but cannot show it (replication): try again later.
            Observed::CreateFailed(Failure::Retryable {
                message: e.to_string(),
            })
        }
        Err(le) => Observed::CreateFailed(failure(&le)),
    }
}
