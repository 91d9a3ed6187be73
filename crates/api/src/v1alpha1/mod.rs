//! `lapse.dev/v1alpha1`: the AccessGrant, AccessPolicy and AccessApproval custom resources.
//!
//! The spec types are deliberately string-typed at the edges: a value the operator cannot parse
//! must still deserialize, so the operator can answer it with `Denied` and a message naming the
//! field instead of failing to read the object at all. Typed forms come from [`crate::validate`].

mod approval;
mod condition;
mod grant;
mod patterns;
mod policy;

pub use approval::{AccessApproval, AccessApprovalSpec, ApprovalDecision, Approver, GrantTarget};
pub use condition::{Condition, ConditionStatus};
pub use grant::{
    AccessGrant, AccessGrantSpec, AccessGrantStatus, ActionCount, ApprovalRecord,
    AssignmentSchedule, DEFAULT_AUDIENCE, EndReason, FederatedCredentialStatus, Federation,
    GrantPhase, IdentityRef, ObjectIdRef, ObjectState, RoleAssignmentStatus, RoleRequest,
    UsageFinding, UsageStatus, Window,
};
pub use patterns::*;
pub use policy::{
    AccessPolicy, AccessPolicySpec, AccessPolicyStatus, ActiveHours, ApprovalRules, Approvers,
    AutoApproveRule, AzureRules, BreakGlassRules, EscalationTier, Expiry, FederationRules,
    LabelSelector, LabelSelectorRequirement, LockTolerance, OnSensitiveAction, TicketRules,
    WatchRules, Weekday,
};

/// The API group of every lapse kind.
pub const GROUP: &str = "lapse.dev";
/// The API version of this module's kinds.
pub const VERSION: &str = "v1alpha1";
