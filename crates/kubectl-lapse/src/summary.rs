//! Short forms of a grant for tables: its identity, roles at scopes, phase and the time that
//! matters in that phase.

use chrono::{DateTime, Utc};
use lapse_api::arm::ArmId;
use lapse_api::v1alpha1::{AccessGrant, AccessGrantSpec, GrantPhase};

use crate::time;

/// `mi/backup-runner`, `sp/<id>`, `app/<id>` — the operator's IDENTITY column, from the spec
/// when the operator has not written it yet.
pub fn identity(g: &AccessGrant) -> String {
    if let Some(n) = g.status.as_ref().and_then(|s| s.identity_name.clone()) {
        return n;
    }
    identity_of(&g.spec)
}

pub fn identity_of(spec: &AccessGrantSpec) -> String {
    let id = &spec.identity;
    if let Some(mi) = &id.managed_identity {
        let name = mi.trim_end_matches('/').rsplit('/').next().unwrap_or(mi);
        format!("mi/{name}")
    } else if let Some(sp) = &id.service_principal {
        format!("sp/{}", sp.object_id)
    } else if let Some(app) = &id.application {
        format!("app/{}", app.object_id)
    } else {
        "-".into()
    }
}

/// The last segment of an ARM scope (`payments-rg`), or the scope itself.
pub fn short_scope(scope: &str) -> String {
    match ArmId::parse(scope) {
        Ok(id) => id.name().unwrap_or(id.as_str()).to_owned(),
        Err(_) => scope.to_owned(),
    }
}

/// `Reader@payments-rg,Storage Blob Data Reader@data`.
pub fn roles_at_scopes(spec: &AccessGrantSpec) -> String {
    spec.roles
        .iter()
        .map(|r| format!("{}@{}", r.role, short_scope(&r.scope)))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn phase(g: &AccessGrant) -> GrantPhase {
    g.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

pub fn created(g: &AccessGrant) -> Option<DateTime<Utc>> {
    g.metadata
        .creation_timestamp
        .as_ref()
        .and_then(time::from_k8s)
}

/// When the lease does what the phase waits for: "starts in 5m", "expires in 42m", "expired
/// 3h ago", "revoked 2m ago"; for a grant still waiting, the lease it asks for.
pub fn when(g: &AccessGrant, now: DateTime<Utc>) -> String {
    let st = g.status.clone().unwrap_or_default();
    let lease = || {
        g.spec
            .duration
            .as_ref()
            .map(|d| format!("for {d}"))
            .or_else(|| {
                g.spec
                    .window
                    .as_ref()
                    .and_then(|w| w.not_after.clone())
                    .map(|t| format!("until {t}"))
            })
            .unwrap_or_else(|| "-".into())
    };
    let not_before = g
        .spec
        .window
        .as_ref()
        .and_then(|w| w.not_before.as_deref())
        .and_then(|t| time::parse_time("spec.window.notBefore", t).ok());
    match st.phase {
        GrantPhase::Scheduled => not_before
            .map(|t| time::event("starts", "started", t, now))
            .unwrap_or_else(lease),
        GrantPhase::Pending | GrantPhase::PendingApproval => lease(),
        GrantPhase::Activating | GrantPhase::Active | GrantPhase::Revoking => st
            .expires_at
            .map(|t| time::event("expires", "expired", t, now))
            .unwrap_or_else(lease),
        terminal => {
            let verb = match terminal {
                GrantPhase::Revoked => "revoked",
                GrantPhase::Denied => "denied",
                GrantPhase::Failed => "failed",
                _ => "expired",
            };
            st.ended_at
                .or(st.expires_at)
                .map(|t| format!("{verb} {}", time::relative(t, now)))
                .unwrap_or_else(|| verb.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use lapse_api::v1alpha1::{AccessGrantStatus, IdentityRef, ObjectIdRef, RoleRequest, Window};

    use super::*;

    const RG: &str =
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg";

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    fn grant(phase: GrantPhase, edit: impl FnOnce(&mut AccessGrant)) -> AccessGrant {
        let mut g = AccessGrant::new(
            "g",
            AccessGrantSpec {
                identity: IdentityRef {
                    managed_identity: Some(format!(
                        "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup/"
                    )),
                    ..Default::default()
                },
                roles: vec![
                    RoleRequest {
                        role: "Reader".into(),
                        scope: RG.into(),
                        condition: None,
                    },
                    RoleRequest {
                        role: "Storage Blob Data Reader".into(),
                        scope: format!("{RG}/providers/Microsoft.Storage/storageAccounts/data"),
                        condition: None,
                    },
                ],
                duration: Some("1h".into()),
                ..Default::default()
            },
        );
        g.status = Some(AccessGrantStatus {
            phase,
            ..Default::default()
        });
        edit(&mut g);
        g
    }

    #[test]
    fn identities_and_roles_read_short() {
        let g = grant(GrantPhase::Pending, |_| {});
        assert_eq!(identity(&g), "mi/backup");
        assert_eq!(
            roles_at_scopes(&g.spec),
            "Reader@payments-rg,Storage Blob Data Reader@data"
        );
        let mut spec = g.spec.clone();
        spec.identity = IdentityRef {
            service_principal: Some(ObjectIdRef {
                object_id: "3fa85f64-5717-4562-b3fc-2c963f66afa6".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            identity_of(&spec),
            "sp/3fa85f64-5717-4562-b3fc-2c963f66afa6"
        );
    }

    #[test]
    fn each_phase_shows_the_time_that_matters() {
        let now = at(0);
        let active = grant(GrantPhase::Active, |g| {
            if let Some(s) = g.status.as_mut() {
                s.expires_at = Some(at(42 * 60));
            }
        });
        assert_eq!(when(&active, now), "expires in 42m");
        let expired = grant(GrantPhase::Expired, |g| {
            if let Some(s) = g.status.as_mut() {
                s.ended_at = Some(at(-3 * 3600));
            }
        });
        assert_eq!(when(&expired, now), "expired 3h ago");
        let revoked = grant(GrantPhase::Revoked, |g| {
            if let Some(s) = g.status.as_mut() {
                s.ended_at = Some(at(-120));
            }
        });
        assert_eq!(when(&revoked, now), "revoked 2m ago");
        let scheduled = grant(GrantPhase::Scheduled, |g| {
            g.spec.window = Some(Box::new(Window {
                not_before: Some(time::rfc3339(at(300))),
                not_after: None,
            }));
        });
        assert_eq!(when(&scheduled, now), "starts in 5m");
        assert_eq!(
            when(&grant(GrantPhase::PendingApproval, |_| {}), now),
            "for 1h"
        );
        assert_eq!(when(&grant(GrantPhase::Denied, |_| {}), now), "denied");
    }
}
