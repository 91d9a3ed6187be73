//! The lease decision core: a pure function from (grant, policies, Azure observations, now) to
//! (actions, status). See [`decide`].

mod conditions;
mod decide;
mod early;
mod model;
mod pim;
mod plan;
mod reason;
mod residual;
mod standing;

#[cfg(test)]
mod tests;

pub use conditions::{
    EXTENSION_DENIED, POLICY_ALLOWED, READY, RECONCILING, REVOCATION_BLOCKED, REVOCATION_OVERDUE,
    STALLED, STANDING_ACCESS, TAMPERED, find as find_condition,
};
pub use decide::decide;
pub use early::{DeleteBudget, Deletes, EarlyEnd, schedule as schedule_early_ends};
pub use model::*;
pub use pim::{ACTIVE_DURATION_TOO_SHORT, PIM_LICENCE_REQUIRED, PIM_MINIMUM, PimSettings};
pub use plan::{
    LeasePlan, PlanError, definition_id_for, fic_target, plan, recorded_fic, recorded_objects,
    recorded_role_assignment, split_role_assignment_id,
};
pub use reason::{Reason, ReasonUsage};
pub use residual::{ResidualBounds, TokenKind, access_may_continue_until};
pub use standing::{Holder, UNDATED_HOLDER_POLL};
