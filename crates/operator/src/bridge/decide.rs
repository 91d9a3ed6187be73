//! Records a decision as the approver: the AccessApproval is created with the bridge's
//! credentials impersonating the mapped Kubernetes user and groups (`Impersonate-User`,
//! `Impersonate-Group`, set through kube's `AuthInfo::impersonate`). The API server checks that
//! the bridge may impersonate exactly them (RBAC `impersonate` on those resourceNames), then
//! authorizes and admits the create as that user: the approver admission policy sees
//! `request.userInfo.username` = the approver, never the bridge. Whether the decision counts is,
//! as always, the grant's policy's business.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::api::PostParams;
use kube::{Api, Client};
use lapse_api::chat::ChatAction;
use lapse_api::v1alpha1::{
    AccessApproval, AccessApprovalSpec, ApprovalDecision, Approver, GrantTarget,
};

use super::users::{Mapped, Platform};

/// What became of one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The AccessApproval was created (its name).
    Created(String),
    /// The same person already made the same decision (the AccessApproval's name).
    AlreadyRecorded(String),
    /// The API server refused it (impersonation, RBAC, admission or schema): its message.
    Refused(String),
    /// Could not ask (timeout, connection): what happened.
    Failed(String),
}

impl Outcome {
    /// The `outcome` label of `lapse_bridge_decisions_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Created(_) => "created",
            Self::AlreadyRecorded(_) => "already_recorded",
            Self::Refused(_) => "refused",
            Self::Failed(_) => "failed",
        }
    }

    /// Whether everyone may see it (a decision on record) rather than only the clicker.
    pub fn public(&self) -> bool {
        matches!(self, Self::Created(_))
    }

    /// What the approver is told.
    pub fn text(&self, action: &ChatAction, who: &Mapped, platform: Platform) -> String {
        let grant = format!("AccessGrant {}/{}", action.namespace, action.name);
        let (verb, emoji) = match action.decision {
            ApprovalDecision::Approve => ("approved", "✅"),
            ApprovalDecision::Deny => ("denied", "⛔"),
        };
        match self {
            Self::Created(name) => format!(
                "{emoji} {} {verb} {grant} (generation {}) from {}: AccessApproval {name} recorded. \
                 The grant's policy decides whether it counts (kubectl lapse -n {} status {}).",
                who.user,
                action.generation,
                platform.title(),
                action.namespace,
                action.name
            ),
            Self::AlreadyRecorded(name) => format!(
                "{} already {verb} {grant} (generation {}): AccessApproval {name} exists; nothing new was recorded.",
                who.user, action.generation
            ),
            Self::Refused(why) => format!(
                "Kubernetes refused the decision on {grant} as {}: {why}. Nothing was recorded.",
                who.user
            ),
            Self::Failed(why) => format!(
                "The decision on {grant} as {} could not be recorded ({why}); try again.",
                who.user
            ),
        }
    }
}

/// Kubernetes clients impersonating each mapped user: one connection pool per identity, built
/// on first use. At most as many as the user map has entries (cleared when it grows past
/// `MAX_CLIENTS`, which only a map of that size can cause).
pub struct Impersonator {
    base: kube::Config,
    clients: Mutex<HashMap<(String, Vec<String>), Client>>,
    timeout: Duration,
}

impl std::fmt::Debug for Impersonator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonator")
            .field("cluster_url", &self.base.cluster_url.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

const MAX_CLIENTS: usize = 1_000;

impl Impersonator {
    pub fn new(base: kube::Config, timeout: Duration) -> Self {
        Self {
            base,
            clients: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn client(&self, who: &Mapped) -> Result<Client, kube::Error> {
        let key = (who.user.clone(), who.groups.clone());
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let mut config = self.base.clone();
        config.auth_info.impersonate = Some(who.user.clone());
        config.auth_info.impersonate_groups = (!who.groups.is_empty()).then(|| who.groups.clone());
        let client = Client::try_from(config)?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Creates the AccessApproval as `who`, within the timeout.
    pub async fn decide(&self, who: &Mapped, action: &ChatAction, comment: String) -> Outcome {
        let client = match self.client(who) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("building the Kubernetes client: {e}")),
        };
        let name = action.approval_name(&who.user);
        let approval = AccessApproval::new(
            &name,
            AccessApprovalSpec {
                grant: GrantTarget {
                    name: action.name.clone(),
                    uid: action.uid.clone(),
                    generation: action.generation,
                },
                decision: action.decision,
                approver: Approver {
                    username: who.user.clone(),
                    groups: who.groups.clone(),
                },
                comment: Some(comment.chars().take(1024).collect()),
            },
        );
        let api: Api<AccessApproval> = Api::namespaced(client, &action.namespace);
        match tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &approval))
            .await
        {
            Ok(Ok(_)) => Outcome::Created(name),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Outcome::AlreadyRecorded(name),
            Ok(Err(kube::Error::Api(s))) if (400..500).contains(&s.code) => {
                Outcome::Refused(if s.message.is_empty() {
                    format!("{} {}", s.code, s.reason)
                } else {
                    s.message.clone()
                })
            }
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(_) => Outcome::Failed(format!(
                "the API server did not answer within {}s",
                self.timeout.as_secs_f32()
            )),
        }
    }
}
