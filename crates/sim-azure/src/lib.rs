//! Azure Resource Manager, Entra token and Microsoft Graph test server over HTTPS (library).
//!
//! `SimAzure::start(config, seed)` serves, on loopback with its own CA, the Azure surfaces lapse
//! touches: the Entra token endpoint (client secret and workload identity federation), role
//! definitions and assignments, PIM role assignment schedules (with PIM's own clock ending
//! them), user-assigned identities and their federated identity credentials, with Azure's
//! status codes, error bodies, limits, throttling and RBAC evaluation.
//! See `docs/sim-azure.md` for what is simulated and the Azure behaviour each part follows.

#![forbid(unsafe_code)]

mod abac;
mod admin;
mod api_error;
mod arm;
mod audit;
mod config;
mod entra;
mod env;
mod error;
mod faults;
mod federation;
mod graph;
mod handle;
mod http;
mod ids;
mod issuer;
mod logs;
mod rbac;
mod roles;
mod seed;
mod server;
mod tenant;
mod throttle;
mod tls;
mod tokens;

pub use audit::{AuditEntry, AuditLog, PIM_EXPIRY_ORIGIN};
pub use config::{Config, ThrottleConfig, ThrottleLimit};
pub use error::SimAzureError;
pub use faults::{FaultAction, FaultRule, Faults};
pub use handle::{ClientCredentials, SimAzureHandle};
pub use issuer::TestIssuer;
pub use logs::{SYNTHETIC_RESOURCE_GROUP, SyntheticEvents};
pub use roles::{BuiltInRoleDefinition, built_in_role_definitions};
pub use seed::{
    ESTATE_RESOURCE_GROUP, Seed, SeedApplication, SeedCredential, SeedFederatedCredential,
    SeedIdentity, SeedLock, SeedPrincipal, SeedResource, SeedResourceGroup, SeedRoleAssignment,
    SeedRoleDefinition, SeedSubscription,
};
pub use server::SimAzure;
pub use tenant::{LockLevel, PrincipalKind, RoleAssignmentView, ScopeDeletion};
