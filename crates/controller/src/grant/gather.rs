//! Gather: everything the decision core reads about one grant from outside it, read once per
//! reconcile (cert-manager's `DataForCertificate` shape): the trust in its status, its
//! request, the policies and namespace labels, the identity's principal and standing
//! privileges, the role catalogue, and the keys of every Azure object it may touch (their
//! partitions loaded into the inventory).

use chrono::Utc;
use kube::ResourceExt;
use lapse_api::lease::{
    self, IdentityObservation, ObjectKey, PrivilegeObservation, StatusTrust, recorded_objects,
};
use lapse_api::policy::{NamedPolicy, covers_namespace};
use lapse_api::role::{RoleCatalogue, RoleRef};
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus, GrantPhase};
use lapse_api::validate::{GrantRequest, validate_grant};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::grant_ref::GrantRef;
use crate::observe::namespace_labels;

/// What one reconcile of a grant knows before it decides anything.
pub(super) struct Observation {
    pub gref: GrantRef,
    pub uid: String,
    pub trust: StatusTrust,
    /// The status as read; the core believes it only when `trust` is `Sealed`.
    pub status: AccessGrantStatus,
    pub labels: std::collections::BTreeMap<String, String>,
    pub policies: Vec<NamedPolicy>,
    pub identity: IdentityObservation,
    pub privileges: PrivilegeObservation,
    /// The management locks that apply to the grant (before its first activation only).
    pub locks: lapse_api::lock::LockObservation,
    pub catalogue: RoleCatalogue,
    /// Every Azure object the grant may touch: what its status records and its spec plans.
    pub keys: Vec<ObjectKey>,
    /// The AccessApprovals naming the grant, and whether they can be believed.
    pub approvals: lapse_api::approval::ApprovalView,
    /// What the checkers said of the tickets the grant names.
    pub tickets: lapse_api::ticket::TicketView,
}

/// Reads what the decision needs. Azure is asked only what this grant's state calls for: a
/// grant no policy can cover, or one already finished, costs no look-up.
pub(super) async fn gather(g: &AccessGrant, ctx: &Context, deleting: bool) -> Result<Observation> {
    let gref = GrantRef::new(g.namespace().ok_or(Error::NoNamespace)?, g.name_any());
    let uid = g.uid().unwrap_or_default();
    let now = Utc::now();
    let trust = ctx.sealer.trust(&uid, g.status.as_ref());
    // The core reads the status only when sealed; anything else is handed over as it is.
    let status = g.status.clone().unwrap_or_default();
    let sealed = (trust == StatusTrust::Sealed).then_some(&status);
    let req = validate_grant(&g.spec).ok();
    let labels = namespace_labels(&ctx.namespaces, gref.namespace());
    let policies = ctx.policies.snapshot();
    // Namespace first: a grant no policy can cover costs no Azure look-up.
    let covered = covers_namespace(&policies, gref.namespace(), &labels);
    let recorded_principal = sealed
        .and_then(|s| s.principal_id.as_deref())
        .and_then(|p| uuid::Uuid::try_parse(p).ok());
    let activated = sealed.is_some_and(|s| s.activated_at.is_some());
    let started = req
        .as_ref()
        .is_some_and(|r| r.not_before.is_none_or(|b| b <= now));

    // Observe what the core reads from outside. The principal comes from the operator's own
    // record, or is resolved from the spec; never from anything else in the status.
    let needs_identity = req.is_some()
        && recorded_principal.is_none()
        && match &trust {
            StatusTrust::Tampered { .. } => true,
            StatusTrust::Absent => deleting || (covered && started),
            StatusTrust::Sealed => {
                !status.phase.is_terminal() && (deleting || (covered && started))
            }
        };
    let identity = match (recorded_principal, &req) {
        (Some(p), _) => IdentityObservation::Resolved { principal_id: p },
        (None, Some(r)) if needs_identity => ctx.resolver.identity(&ctx.azure, &r.identity).await,
        _ => IdentityObservation::Unknown,
    };
    // A federated credential hands over every right of the identity: read its standing roles
    // before the first activation.
    let privileges = match (&req, &identity) {
        (Some(r), IdentityObservation::Resolved { principal_id })
            if r.federation.is_some() && !activated && !deleting && covered && started =>
        {
            crate::privileges::observe(ctx, r, *principal_id).await
        }
        _ => PrivilegeObservation::Unknown,
    };
    // Azure lets a role assignment or FIC be created under a management lock, not deleted:
    // read the locks before the first activation (DESIGN §12 "Locks").
    let locks = match &req {
        Some(r) if !activated && !deleting && covered && started && !status.phase.is_terminal() => {
            crate::management_locks::observe(ctx, r).await
        }
        _ => lapse_api::lock::LockObservation::Unknown,
    };
    let needs_azure = !status.phase.is_terminal() || activated;
    if let Some(r) = &req
        && needs_azure
        && covered
    {
        ctx.resolver
            .resolve_names(&ctx.azure, &role_names_to_resolve(r, &policies))
            .await;
    }
    let keys = keys_of(ctx, &gref, sealed, req.as_ref(), &identity);
    ctx.inventory.ensure_loaded(&ctx.lister(), &keys).await;
    // A tuple a live lease uses through someone else's object: when that object's holder is
    // due to let it go, read it from Azure again rather than wait for the sweep, so the lease
    // puts its own in place as soon as it is gone (lapse_api::lease::Holder).
    if !deleting && !status.phase.is_terminal() {
        let mut due = ctx.inventory.due_holders(&keys, now);
        // A live lease's object missing from the last listing: read it again before the core
        // repairs it with a PUT (a listing paged while others delete can skip it). A healthy
        // lease reads nothing more; a real deletion costs one filtered read before the repair.
        if sealed.is_some_and(|s| s.phase == GrantPhase::Active) {
            due.extend(ctx.inventory.unlisted(&keys));
        }
        if !due.is_empty() {
            ctx.inventory.refresh(&ctx.lister(), &due).await;
        }
    }
    let catalogue = ctx.resolver.catalogue();
    // Tickets are asked about only for a grant still to activate or live: the cache answers,
    // and a check due starts in the background (its answer wakes the grant).
    let tickets = if covered && !deleting && !status.phase.is_terminal() {
        let keys = lapse_api::ticket::tickets_to_check(
            &policies,
            gref.namespace(),
            &labels,
            g.spec.justification.as_deref(),
        );
        ctx.tickets.view(&keys, &gref)
    } else {
        lapse_api::ticket::TicketView::default()
    };
    let approvals = ctx.approvals.view(gref.namespace(), gref.name());
    Ok(Observation {
        gref,
        uid,
        trust,
        status,
        labels,
        policies,
        identity,
        privileges,
        locks,
        catalogue,
        keys,
        approvals,
        tickets,
    })
}

/// The keys a grant may touch: those its (sealed) status records, and those its spec plans.
pub(super) fn keys_of(
    ctx: &Context,
    gref: &GrantRef,
    status: Option<&AccessGrantStatus>,
    req: Option<&GrantRequest>,
    identity: &IdentityObservation,
) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = status
        .map(recorded_objects)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    if let (Some(req), IdentityObservation::Resolved { principal_id }) = (req, identity) {
        let catalogue = ctx.resolver.catalogue();
        // Keys do not depend on the expiry; any instant serves.
        if let Ok(plan) = lease::plan(
            req,
            gref.namespace(),
            gref.name(),
            *principal_id,
            Utc::now(),
            None,
            &ctx.core,
            &catalogue,
        ) {
            keys.extend(plan.role_assignments.into_iter().map(|p| p.key));
            keys.extend(plan.fic.map(|f| f.key));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Role names (of the grant and of every policy) the catalogue must know, with the
/// subscription each would be defined in.
fn role_names_to_resolve(
    req: &GrantRequest,
    policies: &[lapse_api::policy::NamedPolicy],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let subs: Vec<String> = req
        .roles
        .iter()
        .filter_map(|r| r.scope.subscription().map(str::to_owned))
        .collect();
    for r in &req.roles {
        if let (RoleRef::Name(n), Some(sub)) = (&r.role, r.scope.subscription()) {
            out.push((sub.to_owned(), n.clone()));
        }
    }
    for p in policies {
        if let Ok(rules) = &p.rules {
            for (_, role) in &rules.roles {
                if let RoleRef::Name(n) = role {
                    out.extend(subs.iter().map(|s| (s.clone(), n.clone())));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
