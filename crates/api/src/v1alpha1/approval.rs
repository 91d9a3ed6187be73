use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::patterns::*;

/// One person's decision on one AccessGrant: `Approve` or `Deny` its uid at one generation.
///
/// Immutable once created. A ValidatingAdmissionPolicy (`config/admission/approval.yaml`) makes
/// `approver` the caller: its username must equal the requesting user's and its groups be a
/// subset of theirs. Whether the decision counts is the grant's policy's business: its
/// `approval.approvers` list, never the grant's own requester.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
// Each printcolumn repeats `type_ = "string"`: separate columns, not a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "lapse.dev",
    version = "v1alpha1",
    kind = "AccessApproval",
    doc = "One approver's decision (Approve or Deny) on one AccessGrant at one generation. Immutable.",
    namespaced,
    shortname = "apr",
    category = "lapse",
    printcolumn(
        name = "Grant",
        type_ = "string",
        json_path = ".spec.grant.name",
        description = "The AccessGrant decided on"
    ),
    printcolumn(
        name = "Decision",
        type_ = "string",
        json_path = ".spec.decision",
        description = "Approve or Deny"
    ),
    printcolumn(
        name = "Approver",
        type_ = "string",
        json_path = ".spec.approver.username",
        description = "Who decided"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("an AccessApproval is immutable: create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct AccessApprovalSpec {
    /// The grant decided on, by name, uid and generation: a decision on an earlier version of
    /// the grant (or on a deleted and re-created one) does not count.
    pub grant: GrantTarget,
    pub decision: ApprovalDecision,
    /// Who decides: admission makes it the caller.
    pub approver: Approver,
    /// Why, for the record (a ticket, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_JUSTIFICATION_LEN))]
    pub comment: Option<String>,
}

/// The AccessGrant (in the approval's namespace) a decision is about.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GrantTarget {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `metadata.uid` of the grant.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub uid: String,
    /// `metadata.generation` of the grant: an edited grant is a new request.
    #[schemars(range(min = 1))]
    pub generation: i64,
}

/// Approve or Deny.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum ApprovalDecision {
    #[default]
    Approve,
    Deny,
}

impl ApprovalDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "Approve",
            Self::Deny => "Deny",
        }
    }
}

/// A Kubernetes user as the API server authenticated them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Approver {
    #[schemars(length(min = 1, max = MAX_USERNAME_LEN))]
    pub username: String,
    /// Groups the approver decides as (a subset of the caller's).
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = MAX_USERNAME_LEN)))]
    pub groups: Vec<String>,
}
