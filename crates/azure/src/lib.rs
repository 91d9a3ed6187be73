//! ARM and Microsoft Graph client on azure_core/azure_identity: typed calls, error taxonomy, per-subscription rate limiter that serves revocations first.
//!
//! See `docs/azure-client.md` for the calls, their status codes and how errors are classified.

#![forbid(unsafe_code)]

mod arm;
mod calls;
mod client;
mod config;
mod error;
mod graph;
mod limiter;
mod logs;
mod models;
mod rest;

pub use arm::{
    LOCKS_API_VERSION, MSI_API_VERSION, PIM_API_VERSION, ROLE_API_VERSION,
    SUBSCRIPTIONS_API_VERSION,
};
pub use calls::{CallCount, Outcome};
pub use client::AzureClient;
pub use config::{AzureConfig, Cloud, ConfigError, CredentialConfig, Endpoints};
pub use error::{AzureError, ErrorClass, Operation, SCOPE_LOCKED};
pub use limiter::{BucketConfig, CallKind, KindStats, LimiterSnapshot, LimitsConfig};
pub use logs::{
    ACTIVITY_LOG_API_VERSION, ActivityEvent, LogCursor, LogPage, SignInKind, SignInRecord,
};
pub use models::{
    AppCredential, AppRegistration, Application, Fic, FicRequest, ManagedIdentity, Permission,
    RoleAssignment, RoleAssignmentRequest, RoleAssignmentSchedule, RoleDefinition, RolePermission,
    ScheduleRequest, ScheduleRequestRecord, ScheduleRequestType, ServicePrincipal, Subscription,
};

/// Re-exported so callers can build credentials and custom transports without naming the crates.
pub use azure_core::http::HttpClient;
pub use secrecy::SecretString;
pub use url::Url;
