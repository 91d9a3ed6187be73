//! The Azure objects a lease needs, derived (never random) from the grant and the principal,
//! and the reverse: the objects a recorded status says the lease owns.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::model::{Action, CoreSettings, FicPlan, FicTarget, ObjectKey, RoleAssignmentPlan};
use crate::arm::ArmId;
use crate::naming::{self, Marker};
use crate::role::{RoleCatalogue, role_definition_id};
use crate::v1alpha1::{FederatedCredentialStatus, ObjectState, RoleAssignmentStatus};
use crate::validate::{GrantRequest, Identity};

const ROLE_ASSIGNMENTS: &str = "/providers/Microsoft.Authorization/roleAssignments/";
const ROLE_DEFINITIONS: &str = "/providers/Microsoft.Authorization/roleDefinitions/";
const FICS: &str = "/federatedIdentityCredentials/";

/// Everything a lease creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasePlan {
    pub role_assignments: Vec<RoleAssignmentPlan>,
    pub fic: Option<FicPlan>,
}

/// The role definition ID to send for a scope: subscription-scoped where the scope has a
/// subscription, tenant-scoped otherwise (management groups).
pub fn definition_id_for(scope: &ArmId, role: &Uuid) -> String {
    match scope.subscription() {
        Some(sub) => role_definition_id(sub, role),
        None => format!("{ROLE_DEFINITIONS}{role}"),
    }
}

/// Derives the plan. Fails with the index of a role the catalogue cannot resolve.
pub fn plan(
    req: &GrantRequest,
    namespace: &str,
    grant_name: &str,
    principal_id: Uuid,
    expires_at: DateTime<Utc>,
    settings: &CoreSettings,
    catalogue: &RoleCatalogue,
) -> Result<LeasePlan, (usize, String)> {
    let marker = Marker {
        cluster: settings.cluster.clone(),
        grant: Some(format!("{namespace}/{grant_name}")),
        expires_at: Some(expires_at),
    }
    .to_description();
    let mut role_assignments = Vec::with_capacity(req.roles.len());
    for (i, r) in req.roles.iter().enumerate() {
        let role_guid = catalogue
            .resolve(&r.role)
            .map_err(|e| (i, e.to_string()))?
            .guid;
        let name =
            naming::role_assignment_name(&settings.cluster, &principal_id, &role_guid, &r.scope);
        role_assignments.push(RoleAssignmentPlan {
            key: ObjectKey::RoleAssignment {
                principal_id,
                role_guid,
                scope: r.scope.key().to_owned(),
            },
            name,
            scope: r.scope.clone(),
            role_guid,
            role_definition_id: definition_id_for(&r.scope, &role_guid),
            principal_id,
            condition: r.condition.clone(),
            description: marker.clone(),
            written_role: r.written.clone(),
            id: format!("{}{ROLE_ASSIGNMENTS}{name}", r.scope),
        });
    }
    let fic = match (&req.federation, &req.identity) {
        (Some(_), Identity::ManagedIdentity(id)) => Some(FicTarget::ManagedIdentity(id.clone())),
        (Some(_), Identity::Application(id)) => Some(FicTarget::Application(*id)),
        _ => None,
    }
    .zip(req.federation.as_ref())
    .map(|(target, f)| {
        let subject = f.subject(namespace);
        let name = naming::fic_name(&settings.cluster, &target.key(), &subject);
        FicPlan {
            key: ObjectKey::Fic {
                target: target.key(),
                issuer: settings.oidc_issuer.clone(),
                subject: subject.clone(),
            },
            id: target.credential_id(&name),
            target,
            name,
            issuer: settings.oidc_issuer.clone(),
            subject,
            audience: f.audience.clone(),
            description: marker.clone(),
        }
    });
    Ok(LeasePlan {
        role_assignments,
        fic,
    })
}

impl LeasePlan {
    /// The status entries recording this plan, all `Pending`.
    pub fn status_entries(&self) -> (Vec<RoleAssignmentStatus>, Option<FederatedCredentialStatus>) {
        let ras = self
            .role_assignments
            .iter()
            .map(|p| RoleAssignmentStatus {
                role: p.written_role.clone(),
                role_definition_id: Some(p.role_definition_id.clone()),
                scope: p.scope.to_string(),
                id: Some(p.id.clone()),
                state: ObjectState::Pending,
            })
            .collect();
        let fic = self.fic.as_ref().map(|f| FederatedCredentialStatus {
            id: Some(f.id.clone()),
            name: f.name.clone(),
            issuer: f.issuer.clone(),
            subject: f.subject.clone(),
            state: ObjectState::Pending,
        });
        (ras, fic)
    }
}

/// Rebuilds the key and the delete call of a recorded role assignment.
pub fn recorded_role_assignment(
    principal_id: Uuid,
    entry: &RoleAssignmentStatus,
) -> Option<(ObjectKey, Action)> {
    let id = entry.id.as_deref()?;
    let (scope, name) = split_role_assignment_id(id)?;
    let def = entry.role_definition_id.as_deref()?;
    let role_guid = Uuid::try_parse(def.rsplit('/').next()?).ok()?;
    let key = ObjectKey::RoleAssignment {
        principal_id,
        role_guid,
        scope: scope.key().to_owned(),
    };
    Some((
        key.clone(),
        Action::DeleteRoleAssignment {
            key,
            scope: scope.to_string(),
            name,
            id: id.to_owned(),
        },
    ))
}

/// `<scope>/providers/Microsoft.Authorization/roleAssignments/<name>` → (scope, name); the
/// provider segment compares case-insensitively, as ARM's do.
pub fn split_role_assignment_id(id: &str) -> Option<(ArmId, Uuid)> {
    let at = id
        .to_ascii_lowercase()
        .rfind(&ROLE_ASSIGNMENTS.to_ascii_lowercase())?;
    let name = Uuid::try_parse(&id[at + ROLE_ASSIGNMENTS.len()..]).ok()?;
    Some((ArmId::parse(&id[..at]).ok()?, name))
}

/// The FIC target a key or a credential's parent path names: `/applications/<id>` (Graph) or a
/// managed identity's ARM ID.
pub fn fic_target(parent: &str) -> Option<FicTarget> {
    match parent.strip_prefix("/applications/") {
        Some(app) => Uuid::try_parse(app).ok().map(FicTarget::Application),
        None => ArmId::parse(parent).ok().map(FicTarget::ManagedIdentity),
    }
}

/// Rebuilds the key and the delete call of a recorded FIC.
pub fn recorded_fic(entry: &FederatedCredentialStatus) -> Option<(ObjectKey, Action)> {
    let id = entry.id.as_deref()?;
    let at = id.rfind(FICS)?;
    let target = fic_target(&id[..at])?;
    let key = ObjectKey::Fic {
        target: target.key(),
        issuer: entry.issuer.clone(),
        subject: entry.subject.clone(),
    };
    Some((
        key.clone(),
        Action::DeleteFic {
            key,
            target,
            name: entry.name.clone(),
        },
    ))
}
