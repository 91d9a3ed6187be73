//! `SimAzureHandle`: what tests and the sandbox hold while the simulator runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::error::SimAzureError;
use crate::faults::Faults;
use crate::http::lock;
use crate::seed::derived_guid;
use crate::server::Shared;
use crate::tenant::{Principal, PrincipalKind, RoleAssignmentView, ScopeDeletion};
use crate::{env, ids};

/// Client credentials of a directory principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// Tenant (directory) ID.
    pub tenant_id: String,
    /// Application (client) ID.
    pub client_id: String,
    /// Client secret, when the principal has one.
    pub client_secret: Option<String>,
    /// Object ID of the service principal.
    pub object_id: String,
}

/// A running simulator. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct SimAzureHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) addr: SocketAddr,
    pub(crate) ca_pem: String,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<JoinHandle<()>>,
    /// PIM's clock (`server::spawn_pim_ticker`).
    pub(crate) ticker: Option<JoinHandle<()>>,
}

impl SimAzureHandle {
    /// Base URL (`https://127.0.0.1:PORT`): authority host, ARM endpoint and Graph endpoint.
    pub fn url(&self) -> &str {
        &self.shared.base_url
    }

    /// Socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The tenant ID.
    pub fn tenant_id(&self) -> String {
        lock(&self.shared.world).tenant_id.clone()
    }

    /// The first seeded subscription's ID.
    pub fn subscription_id(&self) -> Option<String> {
        lock(&self.shared.world)
            .subscriptions
            .values()
            .next()
            .map(|s| s.id.clone())
    }

    /// Credentials of the principal with this display name, object ID or client ID.
    pub fn credentials(&self, principal: &str) -> Option<ClientCredentials> {
        let world = lock(&self.shared.world);
        let p = world.find_principal(principal)?;
        Some(ClientCredentials {
            tenant_id: world.tenant_id.clone(),
            client_id: p.app_id.clone()?,
            client_secret: p.client_secret.clone(),
            object_id: p.object_id.clone(),
        })
    }

    /// Credentials of the first principal of the seed with a client secret (the operator's),
    /// else of any principal with one.
    pub fn operator_credentials(&self) -> Option<ClientCredentials> {
        let name = {
            let world = lock(&self.shared.world);
            match &world.operator {
                Some(id) => id.clone(),
                None => world
                    .principals
                    .values()
                    .find(|p| p.client_secret.is_some())?
                    .object_id
                    .clone(),
            }
        };
        self.credentials(&name)
    }

    /// ARM ID, principal ID and client ID of the user-assigned identity named `name`.
    pub fn identity(&self, name: &str) -> Option<(String, String, String)> {
        let world = lock(&self.shared.world);
        world
            .identities
            .values()
            .find(|i| i.name.eq_ignore_ascii_case(name))
            .map(|i| (i.id(), i.principal_id.clone(), i.client_id.clone()))
    }

    /// Adds a directory principal now (subject to the replication window) and returns its
    /// credentials; service principals get a fresh client secret.
    pub fn create_principal(&self, display_name: &str, kind: PrincipalKind) -> ClientCredentials {
        let mut world = lock(&self.shared.world);
        let object_id = uuid::Uuid::new_v4().to_string();
        let app_id =
            (kind == PrincipalKind::ServicePrincipal).then(|| uuid::Uuid::new_v4().to_string());
        let secret = app_id.as_ref().map(|_| derived_guid("secret", &object_id));
        world.principals.insert(
            ids::key(&object_id),
            Principal {
                object_id: object_id.clone(),
                app_id: app_id.clone(),
                display_name: display_name.to_owned(),
                kind,
                client_secret: secret.clone(),
                created: Some(Instant::now()),
                identity_id: None,
                application_id: None,
                graph_roles: Vec::new(),
            },
        );
        ClientCredentials {
            tenant_id: world.tenant_id.clone(),
            client_id: app_id.unwrap_or_default(),
            client_secret: secret,
            object_id,
        }
    }

    /// Signs an access token for the principal with this object ID, as the token endpoint would.
    pub fn mint_access_token(
        &self,
        object_id: &str,
        audience: &str,
    ) -> Result<String, SimAzureError> {
        let (principal, tenant) = {
            let world = lock(&self.shared.world);
            let p = world.find_principal(object_id).cloned().ok_or_else(|| {
                SimAzureError::seed("objectId", format!("no principal `{object_id}`"))
            })?;
            (p, world.tenant_id.clone())
        };
        Ok(self.shared.issue_token(&principal, &tenant, audience)?.0)
    }

    /// Deletes a resource group (with its resources and identities) or a resource, as someone
    /// deleting it in Azure would: the role assignments at or below it are deleted with it. A
    /// role assignment DELETE at the scope then answers ARM's 403 for a scope that is gone.
    pub fn delete_scope(&self, scope: &str) -> Result<ScopeDeletion, SimAzureError> {
        lock(&self.shared.world)
            .delete_scope(scope, Instant::now())
            .map_err(|e| SimAzureError::DeleteScope {
                scope: scope.to_owned(),
                reason: e.message,
            })
    }

    /// All live role assignments (PIM's clock is applied first: none past its schedule's end).
    pub fn role_assignments(&self) -> Vec<RoleAssignmentView> {
        crate::arm::pim_sweep(&self.shared);
        lock(&self.shared.world).assignment_views()
    }

    /// Gives the tenant the Entra ID P2 licence PIM needs, or takes it away (every PIM
    /// operation then answers 400 `AadPremiumLicenseRequired`).
    pub fn set_pim_licensed(&self, licensed: bool) {
        lock(&self.shared.world).pim.licensed = licensed;
    }

    /// Moves PIM's clock `offset` ahead of the wall clock (tests: "five minutes later" without
    /// waiting), then lets it act: schedules whose end has now passed are removed. Only PIM
    /// reads this clock; tokens, audit times and RBAC propagation keep the wall clock.
    pub fn set_pim_clock_offset(&self, offset: std::time::Duration) {
        lock(&self.shared.world).pim.clock_offset = offset;
        crate::arm::pim_sweep(&self.shared);
    }

    /// Sets PIM's shortest active assignment and removal delay (Azure's: 5 minutes).
    pub fn set_pim_minimum_duration(&self, minimum: std::time::Duration) {
        lock(&self.shared.world).pim.minimum = minimum;
    }

    /// The audit log.
    pub fn audit(&self) -> AuditLog {
        self.shared.audit.clone()
    }

    /// Sets (a count of 0 removes) a subscription's synthetic Activity Log events, as
    /// `PUT /admin/logs {"syntheticEvents": …}` does.
    pub fn set_synthetic_events(&self, events: crate::logs::SyntheticEvents) {
        self.shared.logs.set_synthetic(events);
    }

    /// Fault injection and runtime delays.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Writes `dir/azure.env` (shell-sourceable) and `dir/azure-ca.pem`. `oidc_issuer` is the
    /// issuer the operator puts in FICs (sim-kube's).
    pub fn write_env(&self, dir: &Path, oidc_issuer: &str) -> Result<(), SimAzureError> {
        env::write(self, dir, oidc_issuer)
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ignored = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ignored = task.await;
        }
    }
}

impl Drop for SimAzureHandle {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ignored = stop.send(());
        }
    }
}
