//! Simulator configuration: limits, delays, token lifetime and throttling, with Azure's defaults.

use std::net::SocketAddr;
use std::time::Duration;

/// One token bucket: `capacity` requests, refilled at `refill_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleLimit {
    /// Bucket size (requests that can be made at once).
    pub capacity: u32,
    /// Tokens added back per second.
    pub refill_per_sec: f64,
}

/// ARM throttling per (subscription, principal). Defaults are Azure's token-bucket sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// Whether throttling is applied at all.
    pub enabled: bool,
    /// GET and HEAD.
    pub reads: ThrottleLimit,
    /// PUT, PATCH and POST.
    pub writes: ThrottleLimit,
    /// DELETE.
    pub deletes: ThrottleLimit,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reads: ThrottleLimit {
                capacity: 250,
                refill_per_sec: 25.0,
            },
            writes: ThrottleLimit {
                capacity: 200,
                refill_per_sec: 10.0,
            },
            deletes: ThrottleLimit {
                capacity: 200,
                refill_per_sec: 10.0,
            },
        }
    }
}

/// How the simulator behaves. `Config::default()` is Azure's behaviour with no delays.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Lifetime of issued access tokens (service principals and app registrations).
    pub token_lifetime: Duration,
    /// Lifetime of access tokens issued to managed identities (Entra: about 24 hours, not
    /// configurable there).
    pub managed_identity_token_lifetime: Duration,
    /// After a principal is created, role assignment PUTs without `principalType` fail with
    /// `PrincipalNotFound` for this long (Entra replication).
    pub replication_window: Duration,
    /// How long a role assignment change takes to affect RBAC decisions.
    pub propagation_delay: Duration,
    /// Role assignments per subscription (`RoleAssignmentLimitExceeded` beyond).
    pub role_assignment_limit: usize,
    /// Federated identity credentials per identity or application.
    pub fic_limit: usize,
    /// How long a written FIC takes before token exchanges can use it (Azure: seconds).
    pub fic_propagation_delay: Duration,
    /// How long a deleted FIC can still be exchanged for a token (Azure: the delete takes a
    /// while to reach every Entra replica). Such a token's sign-in names the deleted FIC.
    pub fic_delete_propagation_delay: Duration,
    /// How long one FIC write holds its identity; a second write that overlaps gets 409.
    pub fic_write_duration: Duration,
    /// Items per page in role assignment lists before a `nextLink` is returned.
    pub page_size: usize,
    /// ARM throttling.
    pub throttle: ThrottleConfig,
    /// Audit log entries kept (the oldest are discarded beyond this).
    pub audit_capacity: usize,
    /// How long after an operation or a sign-in it appears in the Activity Log and the sign-in
    /// log (Azure: minutes; `PUT /admin/logs {"ingestionDelaySecs"}` changes it).
    pub log_ingestion_delay: Duration,
    /// Events kept in each of the Activity Log and the sign-in log.
    pub log_capacity: usize,
    /// Most events per page of either log (Azure's 1,000; fewer makes a reader page more).
    pub log_page_size: usize,
    /// Extra CA certificates (PEM) trusted when fetching an OIDC issuer's discovery document
    /// and JWKS (e.g. sim-kube's CA). The simulator's own CA is always trusted.
    pub trusted_ca_pems: Vec<String>,
    /// Whether the tenant has the Entra ID P2 licence PIM needs; without it every PIM
    /// operation answers 400 `AadPremiumLicenseRequired` (changeable at runtime:
    /// `SimAzureHandle::set_pim_licensed`, `PUT /admin/pim`).
    pub pim_licensed: bool,
    /// PIM's shortest active assignment, and how long after its start an assignment cannot be
    /// removed (Azure: 5 minutes, not configurable there). Tests that want Azure to end a
    /// lease in seconds shorten it, or move PIM's clock instead (`set_pim_clock_offset`).
    pub pim_minimum_duration: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_lifetime: Duration::from_secs(3600),
            managed_identity_token_lifetime: Duration::from_secs(24 * 3600),
            replication_window: Duration::ZERO,
            propagation_delay: Duration::ZERO,
            role_assignment_limit: 4000,
            fic_limit: 20,
            fic_write_duration: Duration::ZERO,
            fic_propagation_delay: Duration::ZERO,
            fic_delete_propagation_delay: Duration::ZERO,
            page_size: 1000,
            throttle: ThrottleConfig::default(),
            audit_capacity: 100_000,
            log_ingestion_delay: Duration::ZERO,
            log_capacity: 100_000,
            log_page_size: crate::logs::PAGE,
            trusted_ca_pems: Vec::new(),
            pim_licensed: true,
            pim_minimum_duration: Duration::from_secs(5 * 60),
        }
    }
}
