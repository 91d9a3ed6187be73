//! Loading the inventory: one partition listed from Azure at a time, each object marked ours
//! (by its derived name) or not, twins (our cluster name, another owner) counted and reported.
//! Reconciles load what their keys need; the sweep reloads everything it covers.

use std::collections::HashMap;

use lapse_api::arm::ArmId;
use lapse_api::lease::{
    AssignmentSchedule, FicTarget, Holder, ObjectKey, PIM_LICENCE_REQUIRED, fic_target,
};
use lapse_api::naming;
use lapse_azure::{AzureError, RoleAssignment};
use uuid::Uuid;

use super::{Inventory, Known, Partition};

/// Where listings come from, and whose objects are ours.
#[derive(Clone, Copy, Debug)]
pub struct Lister<'a> {
    pub azure: &'a lapse_azure::AzureClient,
    pub owner: &'a naming::Owner,
    /// This cluster's issuer: a FIC with another is not ours, whatever its name.
    pub oidc_issuer: &'a str,
}

/// The key of a listed role assignment.
pub fn assignment_key(ra: &RoleAssignment) -> Option<ObjectKey> {
    let role_guid = Uuid::try_parse(ra.role_definition_id.rsplit('/').next()?).ok()?;
    let scope = ArmId::parse(&ra.scope).ok()?;
    Some(ObjectKey::RoleAssignment {
        principal_id: ra.principal_id,
        role_guid,
        scope: scope.key().to_owned(),
    })
}

/// Whether a listed role assignment is this owner's: its name is the one derived for its tuple.
pub fn owns_assignment(owner: &naming::Owner, ra: &RoleAssignment, key: &ObjectKey) -> bool {
    let ObjectKey::RoleAssignment {
        principal_id,
        role_guid,
        ..
    } = key
    else {
        return false;
    };
    ArmId::parse(&ra.scope)
        .is_ok_and(|scope| owner.owns_role_assignment(&ra.name, principal_id, role_guid, &scope))
}

/// The PIM schedules visible from a subscription (optionally one principal's), by the key of
/// the assignment each made, with whether this owner shaped it. A tenant without PIM (no
/// licence) or an operator not allowed to read schedules has none that are lapse's: lapse
/// never made any there. Any other failure fails the listing: without the schedules a
/// PIM-made assignment of ours would look like someone else's.
pub async fn schedules(
    from: &Lister<'_>,
    subscription: &str,
    principal: Option<&Uuid>,
) -> Result<HashMap<ObjectKey, (bool, AssignmentSchedule)>, AzureError> {
    let list = match from
        .azure
        .list_role_assignment_schedules(subscription, principal)
        .await
    {
        Ok(list) => list,
        Err(e) if matches!(e.code(), Some(PIM_LICENCE_REQUIRED | "AuthorizationFailed")) => {
            tracing::debug!(%subscription, error = %e, "no PIM schedules to read");
            return Ok(HashMap::new());
        }
        Err(e) => return Err(e),
    };
    Ok(list
        .into_iter()
        .filter_map(|s| {
            let role_guid = s.role_definition_guid()?;
            let scope = ArmId::parse(&s.scope).ok()?;
            let (starts_at, ends_at) = (s.starts_at?, s.ends_at?);
            let owned = s.request_name().is_some_and(|request| {
                from.owner.owns_schedule(
                    &request,
                    &s.principal_id,
                    &role_guid,
                    &scope,
                    Some(starts_at),
                    Some(ends_at),
                )
            });
            let key = ObjectKey::RoleAssignment {
                principal_id: s.principal_id,
                role_guid,
                scope: scope.key().to_owned(),
            };
            Some((key, (owned, AssignmentSchedule { starts_at, ends_at })))
        })
        .collect())
}

/// What the inventory knows of a listed role assignment: ours by its derived name, or (made
/// through PIM) by the request that shaped its schedule in `schedules`.
pub fn known_assignment(
    owner: &naming::Owner,
    ra: &RoleAssignment,
    key: &ObjectKey,
    schedules: &HashMap<ObjectKey, (bool, AssignmentSchedule)>,
) -> Known {
    let schedule = schedules.get(key);
    Known {
        id: ra.id.clone(),
        owned: owns_assignment(owner, ra, key) || schedule.is_some_and(|(owned, _)| *owned),
        schedule: schedule.map(|(_, s)| *s),
        holder: Holder::of(ra.description.as_deref(), None),
    }
}

impl Inventory {
    /// Lists one partition and replaces it in the inventory.
    pub async fn load(&self, from: &Lister<'_>, p: &Partition) -> Result<(), AzureError> {
        let read = self.begin_read();
        let owner = from.owner;
        let mut objects = HashMap::new();
        let mut twins = 0usize;
        let mut sample = None;
        match p {
            Partition::RoleAssignments(part) => {
                let Some(sub) = part.strip_prefix("/subscriptions/") else {
                    // Never a grant's: validation refuses management group scopes, which the
                    // subscription-wide lists here could not see.
                    return Ok(());
                };
                let list = from.azure.list_role_assignments(sub, None).await?;
                let schedules = schedules(from, sub, None).await?;
                for ra in list {
                    if let Some(k) = assignment_key(&ra) {
                        let known = known_assignment(owner, &ra, &k, &schedules);
                        if !known.owned && owner.is_twin(ra.description.as_deref(), None) {
                            twins += 1;
                            sample.get_or_insert_with(|| ra.id.clone());
                        }
                        objects.insert(k, known);
                    }
                }
            }
            Partition::Fics(target_key) => {
                let Some(target) = fic_target(target_key) else {
                    return Ok(());
                };
                let list = match &target {
                    FicTarget::ManagedIdentity(id) => from.azure.list_fics(id).await,
                    FicTarget::Application(app) => from.azure.list_app_fics(app).await,
                };
                for f in list? {
                    let k = ObjectKey::Fic {
                        target: target_key.clone(),
                        issuer: f.issuer.clone(),
                        subject: f.subject.clone(),
                    };
                    let owned = owner.owns_fic(
                        &f.name,
                        target_key,
                        &f.issuer,
                        &f.subject,
                        from.oidc_issuer,
                    );
                    if !owned && owner.is_twin(f.description.as_deref(), Some(&f.name)) {
                        twins += 1;
                        sample.get_or_insert_with(|| f.id.clone());
                    }
                    let holder = Holder::of(f.description.as_deref(), Some(&f.name));
                    objects.insert(
                        k,
                        Known {
                            id: f.id,
                            owned,
                            schedule: None,
                            holder,
                        },
                    );
                }
            }
        }
        if let Some(sample) = sample {
            crate::audit::twin_objects(twins, &sample);
        }
        self.replace(p.clone(), objects, twins, &read);
        Ok(())
    }

    /// Reads these keys from Azure again, whatever the inventory holds: a role assignment from
    /// the list of its principal's (one filtered list, not the subscription's), a FIC with its
    /// identity's. Failures leave what the inventory held.
    pub async fn refresh(&self, from: &Lister<'_>, keys: &[ObjectKey]) {
        let mut fic_parts = Vec::new();
        for key in keys {
            let read = self.begin_read();
            let ObjectKey::RoleAssignment {
                principal_id,
                scope,
                ..
            } = key
            else {
                fic_parts.push(Partition::of(key));
                continue;
            };
            let Some(sub) = scope
                .strip_prefix("/subscriptions/")
                .and_then(|s| s.split('/').next())
            else {
                continue;
            };
            let listed = match from
                .azure
                .list_role_assignments(sub, Some(principal_id))
                .await
            {
                Ok(list) => schedules(from, sub, Some(principal_id))
                    .await
                    .map(|schedules| (list, schedules)),
                Err(e) => Err(e),
            };
            match listed {
                Ok((list, schedules)) => {
                    let found = list.iter().find_map(|ra| {
                        (assignment_key(ra).as_ref() == Some(key))
                            .then(|| known_assignment(from.owner, ra, key, &schedules))
                    });
                    self.observe(key, found, &read);
                }
                Err(e) => {
                    tracing::warn!(principal = %principal_id, error = %e, "reading a held role assignment again")
                }
            }
        }
        fic_parts.dedup();
        for p in fic_parts {
            if let Err(e) = self.load(from, &p).await {
                tracing::warn!(partition = ?p, error = %e, "reading held federated credentials again");
            }
        }
    }

    /// Loads the partitions of these keys that are not loaded yet. Failures leave them unknown.
    pub async fn ensure_loaded(&self, from: &Lister<'_>, keys: &[ObjectKey]) {
        let mut parts: Vec<Partition> = keys.iter().map(Partition::of).collect();
        parts.dedup();
        for p in parts {
            if !self.is_loaded(&p)
                && let Err(e) = self.load(from, &p).await
            {
                tracing::warn!(partition = ?p, error = %e, "listing Azure objects");
            }
        }
    }
}
