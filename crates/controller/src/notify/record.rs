//! What a notification and an audit line say about a grant: who asked and who decided, what
//! (identity, principal, roles at scopes, the Azure objects), which policy and when.

use chrono::{DateTime, Utc};
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus};
use lapse_api::validate::ApprovalRule;
use serde::Serialize;

/// One grant, as of a transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantRecord {
    /// `LAPSE_CLUSTER_NAME`.
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: Option<i64>,
    /// The phase after the transition.
    pub phase: String,
    /// `spec.requester`: the user who created the grant (admission makes it so).
    pub requester: Option<String>,
    pub break_glass: bool,
    pub justification: Option<String>,
    pub identity: IdentityRecord,
    /// The principal (object) ID the role assignments go to, once resolved.
    pub principal_id: Option<String>,
    /// Every role at its scope; `id` is the role assignment's resource ID once planned.
    pub roles: Vec<RoleRecord>,
    pub federated_credential: Option<FicRecord>,
    /// The AccessPolicy that allowed the grant.
    pub policy: Option<String>,
    /// Who may approve or deny under that policy: its users, and its groups as `group:NAME`.
    pub approvers: Vec<String>,
    /// The decisions that counted (`status.approvals`).
    pub approvals: Vec<DecisionRecord>,
    pub activated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds the lease ended before `expiresAt` so that its deletes stayed within ARM's
    /// delete budget (synchronized expiry; `status.endedEarlySeconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_early_seconds: Option<u32>,
    /// `Expired`, `Revoked` or `Failed` once the lease ended.
    pub end_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityRecord {
    /// `managedIdentity`, `servicePrincipal` or `application`.
    pub kind: &'static str,
    /// The managed identity's resource ID, or the object ID.
    pub id: String,
    /// The short form `kubectl get ag` shows (`mi/backup-runner`).
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRecord {
    pub role: String,
    pub scope: String,
    /// The role assignment's resource ID.
    pub id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FicRecord {
    /// ARM resource ID or Graph ID of the federated identity credential.
    pub id: Option<String>,
    pub name: String,
    pub issuer: String,
    pub subject: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    pub approver: String,
    pub decision: &'static str,
    pub generation: i64,
    pub at: Option<DateTime<Utc>>,
}

impl GrantRecord {
    /// No grant: a finding about a principal acting without a lease. Only the principal and
    /// the governing policy are known.
    pub fn unleased(cluster: &str, principal: &str, policy: Option<&str>) -> Self {
        Self {
            cluster: cluster.to_owned(),
            namespace: String::new(),
            name: String::new(),
            uid: String::new(),
            generation: None,
            phase: String::new(),
            requester: None,
            break_glass: false,
            justification: None,
            identity: IdentityRecord {
                kind: "servicePrincipal",
                id: principal.to_owned(),
                name: None,
            },
            principal_id: Some(principal.to_owned()),
            roles: Vec::new(),
            federated_credential: None,
            policy: policy.map(str::to_owned),
            approvers: Vec::new(),
            approvals: Vec::new(),
            activated_at: None,
            expires_at: None,
            ended_at: None,
            ended_early_seconds: None,
            end_reason: None,
        }
    }

    /// The grant with `status`, the operator's record after the transition. `approval` is the
    /// allowing policy's approval rule, when it has one, for its approvers.
    pub fn of(
        cluster: &str,
        g: &AccessGrant,
        status: &AccessGrantStatus,
        approval: Option<&ApprovalRule>,
    ) -> Self {
        let spec = &g.spec;
        let identity = match (
            &spec.identity.managed_identity,
            &spec.identity.service_principal,
            &spec.identity.application,
        ) {
            (Some(id), _, _) => ("managedIdentity", id.clone()),
            (None, Some(sp), _) => ("servicePrincipal", sp.object_id.clone()),
            (None, None, Some(app)) => ("application", app.object_id.clone()),
            (None, None, None) => ("unknown", String::new()),
        };
        let roles = if status.role_assignments.is_empty() {
            spec.roles
                .iter()
                .map(|r| RoleRecord {
                    role: r.role.clone(),
                    scope: r.scope.clone(),
                    id: None,
                })
                .collect()
        } else {
            status
                .role_assignments
                .iter()
                .map(|r| RoleRecord {
                    role: r.role.clone(),
                    scope: r.scope.clone(),
                    id: r.id.clone(),
                })
                .collect()
        };
        let approvers = approval
            .map(|a| {
                a.users
                    .iter()
                    .cloned()
                    .chain(a.groups.iter().map(|g| format!("group:{g}")))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            cluster: cluster.to_owned(),
            namespace: g.metadata.namespace.clone().unwrap_or_default(),
            name: g.metadata.name.clone().unwrap_or_default(),
            uid: g.metadata.uid.clone().unwrap_or_default(),
            generation: g.metadata.generation,
            phase: status.phase.as_str().to_owned(),
            requester: spec.requester.clone(),
            break_glass: spec.break_glass,
            justification: spec.justification.clone(),
            identity: IdentityRecord {
                kind: identity.0,
                id: identity.1,
                name: status.identity_name.clone(),
            },
            principal_id: status.principal_id.clone(),
            roles,
            federated_credential: status.federated_credential.as_ref().map(|f| FicRecord {
                id: f.id.clone(),
                name: f.name.clone(),
                issuer: f.issuer.clone(),
                subject: f.subject.clone(),
            }),
            policy: status.policy.clone(),
            approvers,
            approvals: status
                .approvals
                .iter()
                .map(|a| DecisionRecord {
                    approver: a.approver.clone(),
                    decision: a.decision.as_str(),
                    generation: a.generation,
                    at: a.at,
                })
                .collect(),
            activated_at: status.activated_at,
            expires_at: status.expires_at,
            ended_at: status.ended_at,
            ended_early_seconds: status.ended_early_seconds,
            end_reason: status
                .end_reason
                .map(|r| r.terminal_phase().as_str().to_owned()),
        }
    }

    /// `namespace/name`.
    pub fn grant(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Each role at its scope, `ROLE at SCOPE`, comma-separated.
    pub fn roles_text(&self) -> String {
        self.roles
            .iter()
            .map(|r| format!("{} at {}", r.role, r.scope))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The identity as people read it: its short name, else its ID.
    pub fn identity_text(&self) -> String {
        self.identity
            .name
            .clone()
            .unwrap_or_else(|| self.identity.id.clone())
    }

    /// The decisions that counted, `APPROVER (DECISION)`, comma-separated.
    pub fn approvals_text(&self) -> String {
        self.approvals
            .iter()
            .map(|a| format!("{} ({})", a.approver, a.decision))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
