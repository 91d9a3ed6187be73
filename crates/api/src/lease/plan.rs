//! The Azure objects a lease needs, derived (never random) from the grant, the principal and
//! the operator's [`Owner`](crate::naming::Owner), and the reverse: the objects a recorded
//! status says the lease holds. A delete's target is always derived again from the object's
//! key, never read from the status.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::model::{
    Action, AssignmentSchedule, CoreSettings, FicPlan, FicTarget, ObjectKey, RoleAssignmentPlan,
};
use crate::arm::ArmId;
use crate::naming::{Marker, Owner};
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

/// Why a grant's roles cannot be planned: the index of the role and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The catalogue cannot resolve the role.
    UnknownRole(usize, String),
    /// Two entries resolve to the same role definition at the same scope (a role written by
    /// name and again by GUID, say): Azure holds one assignment for both.
    Duplicate(usize, String),
}

/// Derives the plan. With `schedule`, role assignments are requested through PIM with it.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    req: &GrantRequest,
    namespace: &str,
    grant_name: &str,
    principal_id: Uuid,
    expires_at: DateTime<Utc>,
    schedule: Option<AssignmentSchedule>,
    settings: &CoreSettings,
    catalogue: &RoleCatalogue,
) -> Result<LeasePlan, PlanError> {
    let owner = &settings.owner;
    let marker = Marker {
        cluster: owner.cluster().to_owned(),
        owner: Some(owner.id()),
        grant: Some(format!("{namespace}/{grant_name}")),
        expires_at: Some(expires_at),
    }
    .to_description();
    let mut role_assignments: Vec<RoleAssignmentPlan> = Vec::with_capacity(req.roles.len());
    for (i, r) in req.roles.iter().enumerate() {
        let role_guid = catalogue
            .resolve(&r.role)
            .map_err(|e| PlanError::UnknownRole(i, e.to_string()))?
            .guid;
        let key = ObjectKey::RoleAssignment {
            principal_id,
            role_guid,
            scope: r.scope.key().to_owned(),
        };
        if let Some(j) = role_assignments.iter().position(|p| p.key == key) {
            return Err(PlanError::Duplicate(
                i,
                format!(
                    "duplicates spec.roles[{j}]: {:?} and {:?} are the same role definition \
                     ({role_guid}) at the same scope",
                    role_assignments[j].written_role, r.written
                ),
            ));
        }
        let name = owner.role_assignment_name(&principal_id, &role_guid, &r.scope);
        role_assignments.push(RoleAssignmentPlan {
            key,
            name,
            scope: r.scope.clone(),
            role_guid,
            role_definition_id: definition_id_for(&r.scope, &role_guid),
            principal_id,
            condition: r.condition.clone(),
            description: marker.clone(),
            written_role: r.written.clone(),
            id: format!("{}{ROLE_ASSIGNMENTS}{name}", r.scope),
            schedule,
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
        let name = owner.fic_name(&target.key(), &subject);
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
                // Azure names an assignment made through PIM; it is recorded once seen.
                id: p.schedule.is_none().then(|| p.id.clone()),
                state: ObjectState::Pending,
                schedule: p.schedule,
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

/// The key of a recorded role assignment, and the call that deletes this owner's assignment
/// for it. The target is derived from the key (principal, role, scope), never the recorded ID.
pub fn recorded_role_assignment(
    owner: &Owner,
    principal_id: Uuid,
    entry: &RoleAssignmentStatus,
) -> Option<(ObjectKey, Action)> {
    let scope = ArmId::parse(&entry.scope).ok()?;
    let def = entry.role_definition_id.as_deref()?;
    let role_guid = Uuid::try_parse(def.rsplit('/').next()?).ok()?;
    let name = owner.role_assignment_name(&principal_id, &role_guid, &scope);
    let key = ObjectKey::RoleAssignment {
        principal_id,
        role_guid,
        scope: scope.key().to_owned(),
    };
    Some((
        key.clone(),
        Action::DeleteRoleAssignment {
            key,
            id: format!("{scope}{ROLE_ASSIGNMENTS}{name}"),
            scope: scope.to_string(),
            name,
            schedule_start: entry.schedule.map(|s| s.starts_at),
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

/// The key of a recorded FIC, and the call that deletes this owner's credential for it: the
/// name is derived from the target and subject, never the recorded name.
pub fn recorded_fic(
    owner: &Owner,
    entry: &FederatedCredentialStatus,
) -> Option<(ObjectKey, Action)> {
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
            name: owner.fic_name(&target.key(), &entry.subject),
            target,
        },
    ))
}

/// The key and state of every object a status records (role assignments, then the FIC), as far
/// as the record can be read. Keys do not depend on the owner; deletes do (see
/// [`recorded_role_assignment`]).
pub fn recorded_objects(
    status: &crate::v1alpha1::AccessGrantStatus,
) -> Vec<(ObjectKey, ObjectState)> {
    let mut out = Vec::new();
    if let Some(p) = status
        .principal_id
        .as_deref()
        .and_then(|p| Uuid::try_parse(p).ok())
    {
        for e in &status.role_assignments {
            let key = ArmId::parse(&e.scope).ok().and_then(|scope| {
                let def = e.role_definition_id.as_deref()?;
                let role_guid = Uuid::try_parse(def.rsplit('/').next()?).ok()?;
                Some(ObjectKey::RoleAssignment {
                    principal_id: p,
                    role_guid,
                    scope: scope.key().to_owned(),
                })
            });
            out.extend(key.map(|k| (k, e.state)));
        }
    }
    if let Some(f) = &status.federated_credential
        && let Some(target) =
            f.id.as_deref()
                .and_then(|id| id.rfind(FICS).and_then(|at| fic_target(&id[..at])))
    {
        out.push((
            ObjectKey::Fic {
                target: target.key(),
                issuer: f.issuer.clone(),
                subject: f.subject.clone(),
            },
            f.state,
        ));
    }
    out
}
