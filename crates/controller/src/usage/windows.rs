//! What attribution needs from the cluster: every lease the grant caches know (its principal,
//! scopes, window, federated credential and its policy's watch rules) and what lapse governs
//! beyond them (for `UseWithoutLease`).

use std::collections::BTreeSet;

use kube::ResourceExt;
use lapse_api::arm::ArmId;
use lapse_api::policy::NamedPolicy;
use lapse_api::usage::{Governed, LeaseWindow};
use lapse_api::v1alpha1::ObjectState;
use lapse_api::validate::IdMatcher;

use crate::context::Context;
use crate::grant_ref::GrantRef;

/// One lease, with what conclusion needs besides its window.
#[derive(Clone, Debug)]
pub struct Lease {
    pub uid: String,
    pub grant: GrantRef,
    pub window: LeaseWindow,
    /// The role definition IDs of its role assignments.
    pub roles: Vec<String>,
    /// The policy that allowed it.
    pub policy: Option<String>,
    /// `status.usage` as last written.
    pub usage: Option<lapse_api::v1alpha1::UsageStatus>,
}

/// Every lease in the caches and what lapse governs.
#[derive(Debug, Default)]
pub struct Leases {
    pub leases: Vec<Lease>,
    pub windows: Vec<LeaseWindow>,
    pub governed: Governed,
    /// Subscriptions that hold a lease's scope or a policy's.
    pub subscriptions: BTreeSet<String>,
}

pub fn gather(ctx: &Context, policies: &[NamedPolicy]) -> Leases {
    let mut out = Leases::default();
    for g in ctx.grants.state() {
        // Only a lease that started has a window: the cache's summary says which.
        let summary = g.summary();
        if !summary.sealed || summary.activated_at.is_none() {
            continue;
        }
        let Some(g) = g.unpacked("usage windows") else {
            continue;
        };
        // Sealed: the summary's seal check was of this status.
        let Some(st) = g.status.as_ref() else {
            continue;
        };
        let (Some(activated_at), Some(principal)) = (
            st.activated_at,
            st.principal_id
                .as_deref()
                .and_then(|p| uuid::Uuid::try_parse(p).ok()),
        ) else {
            continue;
        };
        let scopes: Vec<ArmId> = st
            .role_assignments
            .iter()
            .filter_map(|r| ArmId::parse(&r.scope).ok())
            .collect();
        let rules = st
            .policy
            .as_deref()
            .and_then(|p| policies.iter().find(|n| n.name == p))
            .and_then(|n| n.rules.as_ref().ok());
        let fic = st.federated_credential.as_ref();
        let window = LeaseWindow {
            grant: format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any()),
            principal,
            scopes,
            activated_at,
            ended_at: st.ended_at,
            fic: fic.map(|f| f.name.clone()),
            // The record keeps no deletion time: a deleted credential counts as deleted from
            // the lease's end (tokens before it, through a credential closed early, are not
            // reported).
            fic_deleted_at: fic
                .filter(|f| f.state == ObjectState::Deleted)
                .and(st.ended_at),
            sensitive: rules
                .map(|r| r.sensitive_actions.clone())
                .unwrap_or_else(|| {
                    lapse_api::usage::DEFAULT_SENSITIVE_ACTIONS
                        .iter()
                        .map(|a| (*a).to_owned())
                        .collect()
                }),
            on_sensitive: rules.map(|r| r.on_sensitive_action).unwrap_or_default(),
        };
        for s in &window.scopes {
            if let Some(sub) = s.subscription() {
                out.subscriptions.insert(sub.to_ascii_lowercase());
            }
        }
        out.governed.principals.push(principal);
        out.windows.push(window.clone());
        out.leases.push(Lease {
            uid: g.uid().unwrap_or_default(),
            grant: GrantRef::new(g.namespace().unwrap_or_default(), g.name_any()),
            window,
            roles: st
                .role_assignments
                .iter()
                .filter_map(|r| r.role_definition_id.clone())
                .collect(),
            policy: st.policy.clone(),
            usage: st.usage.as_deref().cloned(),
        });
    }
    for p in policies {
        let Ok(rules) = &p.rules else { continue };
        for s in &rules.scopes {
            if let Some(sub) = s.subscription() {
                out.subscriptions.insert(sub.to_ascii_lowercase());
            }
            out.governed.scopes.push(s.clone());
        }
        out.governed
            .principals
            .extend(rules.service_principals.iter().filter_map(|m| match m {
                IdMatcher::Exact(id) => Some(*id),
                IdMatcher::Any => None,
            }));
    }
    out.governed.principals.sort();
    out.governed.principals.dedup();
    out
}

/// The policy whose scopes hold `resource` (for an Event about use without a lease).
pub fn policy_governing<'p>(policies: &'p [NamedPolicy], resource: &ArmId) -> Option<&'p str> {
    policies
        .iter()
        .find(|p| {
            p.rules
                .as_ref()
                .is_ok_and(|r| r.scopes.iter().any(|s| resource.is_at_or_below(s)))
        })
        .map(|p| p.name.as_str())
}
