//! The estate audit's judgement (docs/kubectl-lapse.md, "audit"): from what was listed in
//! Azure and what the cluster says, which credential paths escape lapse's lifecycle discipline.
//! Pure: no I/O, no Kubernetes or Azure client types; `estate.rs` and `cluster.rs` gather the
//! inputs.
//!
//! Which objects are lapse's is decided as the operator decides it (docs/architecture.md,
//! "Ownership"): an object is this cluster's when its name is the one the operator derives for
//! it (`lapse_api::naming::Owner`), with the cluster name and shard read back from the markers
//! the operator writes (`lapse:<cluster> owner=<cluster ID>[/<shard>] …`) and the cluster ID
//! from the cluster itself. A marker alone, which anyone with write access can type, still
//! makes an object look like this cluster's: it is then judged as one (an orphan no grant
//! claims is reported), never waved through as another cluster's standing access unless the
//! marker names another cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use lapse_api::arm::ArmId;
use lapse_api::lock::ManagementLock;
use lapse_api::naming::{Marker, Owner, fic_cluster};
use lapse_api::policy::NamedPolicy;
use lapse_api::role::{PRIVILEGED_BUILT_IN_ROLES, RoleCatalogue};
pub use lapse_api::usage::Finding as UsageLogFinding;
use lapse_api::v1alpha1::{IdentityRef, UsageFinding};
use lapse_api::validate::{IdMatcher, PolicyRules, selector_matches};
use serde::Serialize;
use uuid::Uuid;

use crate::time;

/// What kind of credential path a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FindingKind {
    /// A role assignment to a service principal or managed identity that no lapse lease
    /// governs.
    StandingRoleAssignment,
    /// A federated identity credential lapse did not create.
    StandingFederation,
    /// An app registration's secret or certificate that lives longer than the threshold.
    LongLivedSecret,
    /// An object with this cluster's lapse marker that no live grant claims.
    Orphan,
    /// An object whose grant's lease has ended.
    Overstay,
    /// An object of this cluster's lapse under a management lock (`CanNotDelete`, `ReadOnly`)
    /// at or above its scope (a federated credential's: its identity): Azure refuses its
    /// delete, so its lease cannot end it.
    LockedLapseObject,
    // Usage evidence (docs/usage.md), as the operator recorded it from Azure's logs: a
    // grant's `status.usage.findings`, and the usage ledger's findings no grant carries.
    /// A token or an operation after a lease ended and its propagation bound.
    UseAfterEnd,
    /// A principal lapse governs acting at a scope lapse governs with no lease covering it:
    /// a standing path (from the usage ledger).
    UseWithoutLease,
    /// An action on the policy's `watch.sensitiveActions` list.
    SensitiveAction,
    /// A leased principal handing access to another principal.
    PrivilegeChain,
    /// A lease that ended with no token and no operation.
    UnusedGrant,
    /// A lease whose every logged action a narrower allowed role also allows.
    RightSize,
}

impl FindingKind {
    pub const ALL: [FindingKind; 12] = [
        Self::StandingRoleAssignment,
        Self::StandingFederation,
        Self::LongLivedSecret,
        Self::Orphan,
        Self::Overstay,
        Self::LockedLapseObject,
        Self::UseAfterEnd,
        Self::UseWithoutLease,
        Self::SensitiveAction,
        Self::PrivilegeChain,
        Self::UnusedGrant,
        Self::RightSize,
    ];

    /// The kinds read from the grants' `status.usage.findings`.
    pub const FROM_GRANTS: [FindingKind; 5] = [
        Self::UseAfterEnd,
        Self::SensitiveAction,
        Self::PrivilegeChain,
        Self::UnusedGrant,
        Self::RightSize,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandingRoleAssignment => "StandingRoleAssignment",
            Self::StandingFederation => "StandingFederation",
            Self::LongLivedSecret => "LongLivedSecret",
            Self::Orphan => "Orphan",
            Self::Overstay => "Overstay",
            Self::LockedLapseObject => "LockedLapseObject",
            Self::UseAfterEnd => "UseAfterEnd",
            Self::UseWithoutLease => "UseWithoutLease",
            Self::SensitiveAction => "SensitiveAction",
            Self::PrivilegeChain => "PrivilegeChain",
            Self::UnusedGrant => "UnusedGrant",
            Self::RightSize => "RightSize",
        }
    }

    /// A usage-evidence kind (from the cluster's records, not from listing Azure).
    pub fn is_usage(self) -> bool {
        matches!(
            self,
            Self::UseAfterEnd
                | Self::UseWithoutLease
                | Self::SensitiveAction
                | Self::PrivilegeChain
                | Self::UnusedGrant
                | Self::RightSize
        )
    }

    /// A kind by name, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---- what was listed in Azure ----

/// Everything the audit listed in Azure.
#[derive(Clone, Debug, Default)]
pub struct Estate {
    /// The audited subscription IDs.
    pub subscriptions: Vec<String>,
    /// Role assignments as listed per subscription (at, above and below it).
    pub role_assignments: Vec<ListedAssignment>,
    /// User-assigned identities of the audited subscriptions.
    pub identities: Vec<ListedIdentity>,
    /// Federated credentials of those identities and of the app registrations.
    pub federated_credentials: Vec<ListedFic>,
    /// App registrations with their credentials (empty when Graph could not be read).
    pub applications: Vec<ListedApplication>,
    /// Service principals Graph described, by object ID.
    pub principals: BTreeMap<Uuid, PrincipalInfo>,
    /// Custom role names, by role definition GUID (built-ins are known without asking).
    pub role_names: BTreeMap<Uuid, String>,
    /// The principal the audit runs as.
    pub caller: Option<Uuid>,
    /// The management locks of the subscriptions that hold lapse's objects
    /// ([`lock_subscriptions`]); `None` when they could not be read.
    pub locks: Option<Vec<ManagementLock>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedAssignment {
    pub id: String,
    pub name: Uuid,
    pub scope: String,
    pub role_definition_id: String,
    pub principal_id: Uuid,
    /// ARM's `principalType`: `ServicePrincipal` (managed identities too), `User`, `Group`, …
    pub principal_type: Option<String>,
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedIdentity {
    pub id: String,
    pub name: String,
    pub principal_id: Uuid,
}

/// Where a federated credential lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FicParent {
    /// A user-assigned identity, by ARM ID.
    Identity(String),
    /// An app registration, by object ID.
    Application(Uuid),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedFic {
    pub id: String,
    pub name: String,
    pub parent: FicParent,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// Graph credentials only.
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedApplication {
    pub id: Uuid,
    pub app_id: Uuid,
    pub display_name: Option<String>,
    pub credentials: Vec<ListedCredential>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CredentialKind {
    /// A client secret (`passwordCredentials`).
    Secret,
    /// A certificate or other key (`keyCredentials`).
    Certificate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedCredential {
    pub kind: CredentialKind,
    pub key_id: Option<Uuid>,
    pub display_name: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// What Graph says of a service principal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrincipalInfo {
    pub display_name: Option<String>,
    pub app_id: Option<Uuid>,
    /// Graph's `servicePrincipalType` (`Application`, `ManagedIdentity`, …).
    pub kind: Option<String>,
}

// ---- what the cluster says ----

/// What the audit read in the cluster.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// The cluster's identity (its `kube-system` namespace UID, or `--cluster-id`).
    pub cluster_id: Option<String>,
    /// `--cluster-name`: the operator's `LAPSE_CLUSTER_NAME`, when given.
    pub cluster_names: Vec<String>,
    /// Every AccessGrant; `None` when they could not be listed.
    pub grants: Option<Vec<GrantRecord>>,
    /// The AccessPolicies, validated; `None` when they could not be listed.
    pub policies: Option<Vec<NamedPolicy>>,
    /// Namespace labels (for policies that select namespaces by label); `None` when unknown.
    pub namespace_labels: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// The usage ledger's findings no grant carries (`UseWithoutLease`); `None` when the
    /// ledger could not be read.
    pub unleased: Option<Vec<UsageLogFinding>>,
    /// What reading the usage ledger said, when it was not simply read (absent, refused).
    pub ledger_note: Option<String>,
}

/// A grant's record of its lease and objects (its status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub terminal: bool,
    /// When the lease ended or ends: the earlier of `endedAt` and `expiresAt`.
    pub lease_end: Option<DateTime<Utc>>,
    pub objects: Vec<RecordedObject>,
    /// The identity the grant is for (`spec.identity`).
    pub identity: IdentityRef,
    /// The usage findings the operator recorded (`status.usage.findings`).
    pub usage: Vec<UsageFinding>,
}

impl GrantRecord {
    fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One Azure object a grant's status records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedObject {
    pub id: Option<String>,
    /// A federated credential's name.
    pub fic_name: Option<String>,
    /// Recorded as `Standing`: access that existed without lapse, used and never touched.
    pub standing: bool,
}

/// The audit's thresholds and clock.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub now: DateTime<Utc>,
    /// `--max-secret-age`: longer-lived secrets and certificates are findings.
    pub max_secret_age: TimeDelta,
    /// `--overstay-after`: how long after its lease's end an object may still be being deleted.
    pub overstay_after: TimeDelta,
}

// ---- what it found ----

/// Whom a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// The object ID (a service principal's, or an app registration's).
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `ManagedIdentity`, `ServicePrincipal` or `Application`.
    pub kind: String,
    /// A user-assigned identity's ARM ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The principal the audit runs as.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_caller: bool,
}

impl Principal {
    /// `mi/legacy-etl`, `sp/ci-deployer`, `app/legacy-billing` (the object ID when Graph gave
    /// no name).
    pub fn short(&self) -> String {
        let prefix = match self.kind.as_str() {
            "ManagedIdentity" => "mi",
            "Application" => "app",
            _ => "sp",
        };
        format!(
            "{prefix}/{}",
            self.display_name.as_deref().unwrap_or(&self.id)
        )
    }
}

/// A credential a `LongLivedSecret` finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialFacts {
    pub kind: CredentialKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    /// Whole days from start to end; `None` without an end (it never expires).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_days: Option<i64>,
}

/// A management lock a finding is under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockFacts {
    pub id: String,
    pub name: String,
    /// `CanNotDelete` or `ReadOnly`.
    pub level: String,
    /// Where it sits: the scope itself or one above it.
    pub scope: String,
}

/// The log event a usage-evidence finding rests on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageFacts {
    /// When the event happened (or when the lease was concluded).
    pub at: DateTime<Utc>,
    /// The log event's ID (Activity Log `eventDataId`, sign-in `id`), if one shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The operator's words.
    pub message: String,
}

/// One credential path outside lapse's lifecycle discipline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: FindingKind,
    /// The Azure object's ID: a role assignment's or FIC's resource ID, a Graph FIC's ID, a
    /// credential's `keyId`.
    pub object_id: String,
    pub principal: Principal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The role's name (its definition GUID when the name is not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_definition_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialFacts>,
    /// The AccessPolicies that already allow this access just in time (standing findings);
    /// `None` when they are not known (no cluster) or it does not apply.
    pub covered_by: Option<Vec<String>>,
    /// The grant an `Orphan`'s marker or an `Overstay`'s record names (`namespace/name`); a
    /// `LockedLapseObject`'s grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The management locks a `LockedLapseObject` is under.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<LockFacts>,
    /// The log event of a usage-evidence finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageFacts>,
    /// Why it matters, in a sentence.
    pub detail: String,
    /// The same, in a few words, for the table.
    #[serde(skip)]
    pub note: String,
}

/// How many objects were looked at, and why some are not findings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub role_assignments: usize,
    pub identities: usize,
    pub federated_credentials: usize,
    pub applications: usize,
    pub credentials: usize,
    /// Role assignments to users and groups (the audit is about workload identities).
    pub user_and_group_assignments: usize,
    /// Role assignments above the audited subscriptions (management groups, the root).
    pub above_audited_scopes: usize,
    /// This cluster's objects a live lease holds.
    pub governed_by_lapse: usize,
    /// Objects lapse marked for another cluster (their cluster's audit judges them).
    pub other_clusters: usize,
    /// Lapse's objects not judged: the grants could not be read (or no cluster was).
    pub unchecked: usize,
    /// Credentials that have expired (no longer a path in).
    pub expired_credentials: usize,
}

/// The audit's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub tally: Tally,
    /// The lapse cluster names recognised as this cluster's.
    pub cluster_names: Vec<String>,
    /// What could not be judged, and why.
    pub notes: Vec<String>,
}

/// Judges the estate.
pub fn audit(estate: &Estate, cluster: Option<&Cluster>, opts: &Options) -> Report {
    let ours = Ours::of(estate, cluster);
    let ctx = Context::new(estate, cluster, &ours, opts);
    let mut report = Report {
        cluster_names: ours.names.iter().cloned().collect(),
        ..Report::default()
    };
    report.tally.identities = estate.identities.len();
    report.tally.applications = estate.applications.len();
    ctx.role_assignments(&mut report);
    ctx.federated_credentials(&mut report);
    ctx.credentials(&mut report);
    ctx.usage(&mut report);
    match cluster {
        None => report.notes.push(
            "no cluster: Orphan, Overstay and the usage findings are not checked and \
             AccessPolicy coverage is unknown"
                .into(),
        ),
        Some(c) => {
            if c.grants.is_none() {
                report.notes.push(
                    "the AccessGrants could not be listed: Orphan, Overstay and the grants' \
                     usage findings are not checked"
                        .into(),
                );
            }
            if let Some(n) = &c.ledger_note {
                report.notes.push(n.clone());
            }
            if c.policies.is_none() {
                report.notes.push(
                    "the AccessPolicies could not be listed: AccessPolicy coverage is unknown"
                        .into(),
                );
            }
            if c.cluster_id.is_none() {
                report.notes.push(
                    "the cluster ID is unknown (reading namespace kube-system was refused; \
                     --cluster-id sets it): this cluster's objects are recognised by their \
                     markers only"
                        .into(),
                );
            }
        }
    }
    report.findings.sort_by(|a, b| {
        (a.kind, a.principal.short(), &a.scope, &a.object_id).cmp(&(
            b.kind,
            b.principal.short(),
            &b.scope,
            &b.object_id,
        ))
    });
    report
}

/// Whose lapse objects are this cluster's.
#[derive(Debug, Default)]
struct Ours {
    cluster_id: Option<String>,
    /// Cluster names recognised as this cluster's.
    names: BTreeSet<String>,
    /// Owners whose derived names are this cluster's (each name, with each shard seen).
    owners: Vec<Owner>,
    /// No cluster was read: which lapse cluster is this one is unknown, so every object lapse
    /// marked may be this cluster's, and none is judged.
    blind: bool,
}

impl Ours {
    fn of(estate: &Estate, cluster: Option<&Cluster>) -> Self {
        let Some(cluster) = cluster else {
            return Self {
                blind: true,
                ..Self::default()
            };
        };
        let cluster_id = cluster
            .cluster_id
            .as_ref()
            .map(|id| id.to_ascii_lowercase());
        let mut names: BTreeSet<String> = cluster.cluster_names.iter().cloned().collect();
        let mut shards: BTreeSet<Option<String>> = BTreeSet::from([None]);
        // Markers naming this cluster's ID say its name (and shard).
        let markers = estate
            .role_assignments
            .iter()
            .filter_map(|ra| ra.description.as_deref())
            .chain(
                estate
                    .federated_credentials
                    .iter()
                    .filter_map(|f| f.description.as_deref()),
            )
            .filter_map(Marker::parse);
        for m in markers {
            let Some(owner) = m.owner.as_deref() else {
                continue;
            };
            let (id, shard) = match owner.split_once('/') {
                Some((id, shard)) => (id, Some(shard.to_owned())),
                None => (owner, None),
            };
            if cluster_id.as_deref() == Some(id.to_ascii_lowercase().as_str()) {
                names.insert(m.cluster.clone());
                shards.insert(shard);
            }
        }
        // The grants' own records name the cluster's FICs.
        for g in cluster.grants.iter().flatten() {
            for o in &g.objects {
                if let Some(name) = o.fic_name.as_deref().and_then(fic_cluster) {
                    names.insert(name.to_owned());
                }
            }
        }
        let owners = match &cluster_id {
            Some(id) => names
                .iter()
                .flat_map(|n| shards.iter().map(move |s| (n, s)))
                .filter_map(|(n, s)| Owner::new(n, id, s.as_deref()).ok())
                .collect(),
            None => Vec::new(),
        };
        Self {
            cluster_id,
            names,
            owners,
            blind: false,
        }
    }

    /// Whether a marker says this cluster (any lapse cluster, when the cluster is unknown).
    fn marker_is_ours(&self, m: &Marker) -> bool {
        self.blind
            || self.names.contains(&m.cluster)
            || m.owner.as_deref().is_some_and(|o| {
                let id = o.split_once('/').map_or(o, |(id, _)| id);
                self.cluster_id.as_deref() == Some(id.to_ascii_lowercase().as_str())
            })
    }
}

/// Whether an object is lapse's, and whose.
#[derive(Debug, PartialEq, Eq)]
enum Lapse {
    /// Not lapse's: standing.
    No,
    /// This cluster's: its name is derived by this cluster's operator (`verified`), or only its
    /// marker or name prefix says so.
    Ours { verified: bool },
    /// Marked for another cluster.
    Other,
}

struct Context<'a> {
    estate: &'a Estate,
    cluster: Option<&'a Cluster>,
    ours: &'a Ours,
    opts: &'a Options,
    catalogue: RoleCatalogue,
    audited: Vec<ArmId>,
    identities: BTreeMap<Uuid, &'a ListedIdentity>,
    identity_by_id: BTreeMap<String, &'a ListedIdentity>,
    apps: BTreeMap<Uuid, &'a ListedApplication>,
    /// Every lock read, with the scope it sits at.
    locks: Vec<(ArmId, &'a ManagementLock)>,
}

impl<'a> Context<'a> {
    fn new(
        estate: &'a Estate,
        cluster: Option<&'a Cluster>,
        ours: &'a Ours,
        opts: &'a Options,
    ) -> Self {
        let mut catalogue = RoleCatalogue::builtin();
        for (guid, name) in &estate.role_names {
            catalogue.insert(name, *guid);
        }
        Self {
            estate,
            cluster,
            ours,
            opts,
            catalogue,
            audited: estate
                .subscriptions
                .iter()
                .filter_map(|s| ArmId::parse(&format!("/subscriptions/{s}")).ok())
                .collect(),
            identities: estate
                .identities
                .iter()
                .map(|i| (i.principal_id, i))
                .collect(),
            identity_by_id: estate
                .identities
                .iter()
                .map(|i| (i.id.to_ascii_lowercase(), i))
                .collect(),
            apps: estate.applications.iter().map(|a| (a.id, a)).collect(),
            locks: estate
                .locks
                .iter()
                .flatten()
                .filter_map(|l| Some((lock_scope(&l.id)?, l)))
                .collect(),
        }
    }

    /// A role assignment's scope when the audit judges it: at or below an audited
    /// subscription (`None`: above them, or unreadable).
    fn judged_scope(&self, ra: &ListedAssignment) -> Option<ArmId> {
        let scope = ArmId::parse(&ra.scope).ok()?;
        self.audited
            .iter()
            .any(|s| scope.is_at_or_below(s))
            .then_some(scope)
    }

    /// Whether a role assignment is lapse's, and whose.
    fn assignment_lapse(
        &self,
        ra: &ListedAssignment,
        scope: &ArmId,
        marker: Option<&Marker>,
    ) -> Lapse {
        let verified = role_guid(&ra.role_definition_id).is_some_and(|g| {
            self.ours
                .owners
                .iter()
                .any(|o| o.owns_role_assignment(&ra.name, &ra.principal_id, &g, scope))
        });
        if verified {
            return Lapse::Ours { verified: true };
        }
        match marker {
            Some(m) if self.ours.marker_is_ours(m) => Lapse::Ours { verified: false },
            Some(_) => Lapse::Other,
            None => Lapse::No,
        }
    }

    /// Whether a federated credential is lapse's, and whose.
    fn fic_lapse(&self, f: &ListedFic, target_key: &str, marker: Option<&Marker>) -> Lapse {
        let verified = self
            .ours
            .owners
            .iter()
            .any(|o| o.fic_name(target_key, &f.subject) == f.name);
        let by_name = fic_cluster(&f.name);
        if verified {
            Lapse::Ours { verified: true }
        } else if by_name.is_some_and(|c| self.ours.blind || self.ours.names.contains(c))
            || marker.is_some_and(|m| self.ours.marker_is_ours(m))
        {
            Lapse::Ours { verified: false }
        } else if by_name.is_some() || marker.is_some() {
            Lapse::Other
        } else {
            Lapse::No
        }
    }

    /// A `LockedLapseObject` finding when management locks sit at or above `at` (the object's
    /// scope, or a federated credential's identity): which locks, and what they will do to the
    /// lease that holds the object.
    fn locked(
        &self,
        at: &ArmId,
        fic_name: Option<&str>,
        marker: Option<&Marker>,
        base: &Finding,
        what: &str,
    ) -> Option<Finding> {
        let locks: Vec<&(ArmId, &ManagementLock)> = self
            .locks
            .iter()
            .filter(|(scope, _)| at.is_at_or_below(scope))
            .collect();
        let (_, first) = locks.first()?;
        let named: Vec<String> = locks
            .iter()
            .map(|(_, l)| format!("{:?} ({}, {})", l.name, l.level, l.id))
            .collect();
        let locks_words = match named.as_slice() {
            [one] => format!("management lock {one} applies"),
            many => format!("management locks {} apply", many.join(", ")),
        };
        let claimants = self.claimants(&base.object_id, fic_name);
        let live = claimants
            .iter()
            .filter(|g| self.holds(g))
            .max_by_key(|g| g.lease_end);
        let marked = marker.and_then(|m| m.grant.clone());
        let (grant, consequence, short) = match (self.grants(), live) {
            (Some(_), Some(g)) => {
                let until = g
                    .lease_end
                    .map(|t| {
                        format!(
                            " (lease until {}, {})",
                            time::rfc3339(t),
                            time::relative(t, self.opts.now)
                        )
                    })
                    .unwrap_or_default();
                (
                    Some(g.full_name()),
                    format!(
                        "grant {}{until} holds it: when its lease ends, its revocation will be \
                         blocked (RevocationBlocked) until the lock is removed",
                        g.full_name()
                    ),
                    "revocation will be blocked",
                )
            }
            (Some(_), None) => (
                claimants
                    .iter()
                    .max_by_key(|g| g.lease_end)
                    .map(|g| g.full_name())
                    .or(marked),
                "no live lease holds it, and the operator cannot delete it while the lock stands"
                    .to_owned(),
                "delete refused",
            ),
            (None, _) => (
                marked,
                "lapse will not be able to delete it when its lease ends: the revocation will be \
                 blocked (RevocationBlocked) until the lock is removed"
                    .to_owned(),
                "delete will be refused",
            ),
        };
        let more = match locks.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        Some(Finding {
            kind: FindingKind::LockedLapseObject,
            grant,
            locks: locks
                .iter()
                .map(|(scope, l)| LockFacts {
                    id: l.id.clone(),
                    name: l.name.clone(),
                    level: l.level.to_string(),
                    scope: scope.as_str().to_owned(),
                })
                .collect(),
            detail: format!(
                "{what}: {locks_words} at or above it, and Azure refuses to delete it while a \
                 lock stands (409 ScopeLocked): {consequence}"
            ),
            note: format!("lock {} ({}){more}; {short}", first.name, first.level),
            ..base.clone()
        })
    }

    fn grants(&self) -> Option<&'a [GrantRecord]> {
        self.cluster.and_then(|c| c.grants.as_deref())
    }

    fn policies(&self) -> Option<&'a [NamedPolicy]> {
        self.cluster.and_then(|c| c.policies.as_deref())
    }

    /// Who a role assignment or FIC of `principal_id` is about.
    fn principal(&self, principal_id: &Uuid) -> Principal {
        let is_caller = self.estate.caller == Some(*principal_id);
        if let Some(i) = self.identities.get(principal_id) {
            return Principal {
                id: principal_id.to_string(),
                display_name: Some(i.name.clone()),
                kind: "ManagedIdentity".into(),
                resource_id: Some(i.id.clone()),
                is_caller,
            };
        }
        let info = self.estate.principals.get(principal_id);
        let kind = match info.and_then(|i| i.kind.as_deref()) {
            Some("ManagedIdentity") => "ManagedIdentity",
            _ => "ServicePrincipal",
        };
        Principal {
            id: principal_id.to_string(),
            display_name: info.and_then(|i| i.display_name.clone()),
            kind: kind.into(),
            resource_id: None,
            is_caller,
        }
    }

    fn app_principal(&self, app: &ListedApplication) -> Principal {
        Principal {
            id: app.id.to_string(),
            display_name: app.display_name.clone(),
            kind: "Application".into(),
            resource_id: None,
            is_caller: false,
        }
    }

    /// The grants whose status records an object, by ID (or, for FICs, by name).
    fn claimants(&self, id: &str, fic_name: Option<&str>) -> Vec<&'a GrantRecord> {
        let id = id.to_ascii_lowercase();
        self.grants()
            .unwrap_or_default()
            .iter()
            .filter(|g| {
                g.objects.iter().any(|o| {
                    !o.standing
                        && (o.id.as_deref().map(str::to_ascii_lowercase).as_deref()
                            == Some(id.as_str())
                            || (fic_name.is_some() && o.fic_name.as_deref() == fic_name))
                })
            })
            .collect()
    }

    /// A lease still holds its object: it has not ended, or ended so recently that the
    /// object may still be being deleted.
    fn holds(&self, g: &GrantRecord) -> bool {
        match g.lease_end {
            Some(end) => end + self.opts.overstay_after > self.opts.now,
            None => !g.terminal,
        }
    }

    /// Judges one of this cluster's objects against the grants: governed, `Overstay` or
    /// `Orphan` (the finding's kind, grant and words).
    fn judge_ours(
        &self,
        id: &str,
        fic_name: Option<&str>,
        marker: Option<&Marker>,
        verified: bool,
        tally: &mut Tally,
    ) -> Option<(FindingKind, Option<String>, String, String)> {
        if self.grants().is_none() {
            tally.unchecked += 1;
            return None;
        }
        let claimants = self.claimants(id, fic_name);
        if claimants.iter().any(|g| self.holds(g)) {
            tally.governed_by_lapse += 1;
            return None;
        }
        let unverified = if verified {
            String::new()
        } else {
            "; its name is not the one this cluster's operator derives (a twin operator's, or a \
             hand-written marker)"
                .to_owned()
        };
        if let Some(g) = claimants.iter().max_by_key(|g| g.lease_end) {
            let ended = g.lease_end.map_or_else(
                || "its lease ended".to_owned(),
                |t| {
                    format!(
                        "its lease ended at {} ({})",
                        time::rfc3339(t),
                        time::relative(t, self.opts.now)
                    )
                },
            );
            let note = g.lease_end.map_or_else(
                || format!("grant {} ended", g.full_name()),
                |t| {
                    format!(
                        "grant {} ended {}",
                        g.full_name(),
                        time::relative(t, self.opts.now)
                    )
                },
            );
            return Some((
                FindingKind::Overstay,
                Some(g.full_name()),
                format!(
                    "grant {} ({}) records this object and {ended}, yet it still exists: the \
                     access outlives its lease{unverified}",
                    g.full_name(),
                    g.phase
                ),
                note,
            ));
        }
        let grant = marker.and_then(|m| m.grant.clone());
        let said = match (&grant, marker.and_then(|m| m.expires_at)) {
            (Some(g), Some(t)) => format!(
                "; its marker names grant {g}, lease until {}",
                time::rfc3339(t)
            ),
            (Some(g), None) => format!("; its marker names grant {g}"),
            (None, Some(t)) => format!("; its marker says the lease ended {}", time::rfc3339(t)),
            (None, None) => String::new(),
        };
        let note = match &grant {
            Some(g) => format!("no live grant (marker: {g})"),
            None => "no live grant claims it".to_owned(),
        };
        Some((
            FindingKind::Orphan,
            grant,
            format!(
                "carries this cluster's lapse marker but no live grant claims it: the \
                 operator's sweep deletes such objects, so its sweep is failing or it is not \
                 the operator's{said}{unverified}"
            ),
            note,
        ))
    }

    fn role_assignments(&self, report: &mut Report) {
        let mut seen = BTreeSet::new();
        for ra in &self.estate.role_assignments {
            if !seen.insert(ra.id.to_ascii_lowercase()) {
                continue;
            }
            report.tally.role_assignments += 1;
            let Some(scope) = self.judged_scope(ra) else {
                report.tally.above_audited_scopes += 1;
                continue;
            };
            if is_person(ra) {
                report.tally.user_and_group_assignments += 1;
                continue;
            }
            let role_guid = role_guid(&ra.role_definition_id);
            let marker = ra.description.as_deref().and_then(Marker::parse);
            let lapse = self.assignment_lapse(ra, &scope, marker.as_ref());
            let role = role_guid
                .map(|g| {
                    self.catalogue
                        .name_of(&g)
                        .map_or_else(|| g.to_string(), str::to_owned)
                })
                .unwrap_or_else(|| ra.role_definition_id.clone());
            let principal = self.principal(&ra.principal_id);
            let base = Finding {
                kind: FindingKind::StandingRoleAssignment,
                object_id: ra.id.clone(),
                principal,
                scope: Some(scope.as_str().to_owned()),
                role: Some(role.clone()),
                role_definition_id: role_guid.map(|g| g.to_string()),
                issuer: None,
                subject: None,
                credential: None,
                covered_by: None,
                grant: None,
                locks: Vec::new(),
                usage: None,
                detail: String::new(),
                note: String::new(),
            };
            match lapse {
                Lapse::Other => report.tally.other_clusters += 1,
                Lapse::Ours { verified } => {
                    let what = format!("{role} at {}", scope.as_str());
                    if let Some(f) = self.locked(&scope, None, marker.as_ref(), &base, &what) {
                        report.findings.push(f);
                    }
                    if let Some((kind, grant, detail, note)) =
                        self.judge_ours(&ra.id, None, marker.as_ref(), verified, &mut report.tally)
                    {
                        report.findings.push(Finding {
                            kind,
                            grant,
                            detail: format!("{what}: {detail}"),
                            note,
                            ..base
                        });
                    }
                }
                Lapse::No => {
                    let covered = self.policies().map(|p| {
                        covering_role(
                            p,
                            &self.catalogue,
                            &base.principal,
                            self.app_of(&ra.principal_id),
                            role_guid,
                            &scope,
                        )
                    });
                    let privileged =
                        role_guid.is_some_and(|g| PRIVILEGED_BUILT_IN_ROLES.contains(&g));
                    let used_by: Vec<String> = self
                        .grants()
                        .unwrap_or_default()
                        .iter()
                        .filter(|g| {
                            g.objects.iter().any(|o| {
                                o.standing
                                    && o.id
                                        .as_deref()
                                        .is_some_and(|i| i.eq_ignore_ascii_case(&ra.id))
                            })
                        })
                        .map(GrantRecord::full_name)
                        .collect();
                    let mut detail = format!(
                        "{role} at {} for {} is standing access no lapse lease governs: it holds \
                         whether or not it is needed",
                        scope.as_str(),
                        base.principal.short()
                    );
                    if privileged {
                        detail.push_str(", and the role can grant more access (privileged)");
                    }
                    if !used_by.is_empty() {
                        detail.push_str(&format!(
                            "; grant(s) {} use it as standing access and leave it in place",
                            used_by.join(", ")
                        ));
                    }
                    if base.principal.is_caller {
                        detail.push_str("; it is the principal this audit runs as");
                    }
                    let note = [
                        if privileged { "privileged role" } else { "" },
                        if base.principal.is_caller {
                            "the audit's own principal"
                        } else {
                            ""
                        },
                    ]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                    match &covered {
                        Some(c) if !c.is_empty() => detail.push_str(&format!(
                            "; AccessPolicy {} already allows it just in time: request grants \
                             and remove the assignment",
                            c.join(", ")
                        )),
                        Some(_) => detail.push_str(
                            "; no AccessPolicy allows it yet (kubectl lapse audit --suggest \
                             prints one)",
                        ),
                        None => {}
                    }
                    report.findings.push(Finding {
                        covered_by: covered,
                        detail,
                        note,
                        ..base
                    });
                }
            }
        }
    }

    /// The app registration whose service principal `principal_id` is, when Graph said so.
    fn app_of(&self, principal_id: &Uuid) -> Option<Uuid> {
        let app_id = self.estate.principals.get(principal_id)?.app_id?;
        self.estate
            .applications
            .iter()
            .find(|a| a.app_id == app_id)
            .map(|a| a.id)
    }

    fn federated_credentials(&self, report: &mut Report) {
        for f in &self.estate.federated_credentials {
            report.tally.federated_credentials += 1;
            let (target_key, principal, identity_id) = match &f.parent {
                FicParent::Identity(id) => {
                    let key = fic_target_key(&f.parent);
                    let principal = match self.identity_by_id.get(&id.to_ascii_lowercase()) {
                        Some(i) => self.principal(&i.principal_id),
                        None => Principal {
                            id: id.clone(),
                            display_name: id.rsplit('/').next().map(str::to_owned),
                            kind: "ManagedIdentity".into(),
                            resource_id: Some(id.clone()),
                            is_caller: false,
                        },
                    };
                    (key, principal, Some(id.clone()))
                }
                FicParent::Application(app) => {
                    let principal = match self.apps.get(app) {
                        Some(a) => self.app_principal(a),
                        None => Principal {
                            id: app.to_string(),
                            display_name: None,
                            kind: "Application".into(),
                            resource_id: None,
                            is_caller: false,
                        },
                    };
                    (format!("/applications/{app}"), principal, None)
                }
            };
            let marker = f.description.as_deref().and_then(Marker::parse);
            let lapse = self.fic_lapse(f, &target_key, marker.as_ref());
            let base = Finding {
                kind: FindingKind::StandingFederation,
                object_id: f.id.clone(),
                principal,
                scope: identity_id,
                role: None,
                role_definition_id: None,
                issuer: Some(f.issuer.clone()),
                subject: Some(f.subject.clone()),
                credential: None,
                covered_by: None,
                grant: None,
                locks: Vec::new(),
                usage: None,
                detail: String::new(),
                note: String::new(),
            };
            match lapse {
                Lapse::Other => report.tally.other_clusters += 1,
                Lapse::Ours { verified } => {
                    let identity = base.scope.as_deref().and_then(|id| ArmId::parse(id).ok());
                    if let Some(locked) = identity.and_then(|at| {
                        let what = format!("federated credential {}", f.name);
                        self.locked(&at, Some(&f.name), marker.as_ref(), &base, &what)
                    }) {
                        report.findings.push(locked);
                    }
                    if let Some((kind, grant, detail, note)) = self.judge_ours(
                        &f.id,
                        Some(&f.name),
                        marker.as_ref(),
                        verified,
                        &mut report.tally,
                    ) {
                        report.findings.push(Finding {
                            kind,
                            grant,
                            detail: format!("federated credential {}: {detail}", f.name),
                            note,
                            ..base
                        });
                    }
                }
                Lapse::No => {
                    let covered = self.policies().and_then(|p| {
                        covering_federation(
                            p,
                            self.cluster.and_then(|c| c.namespace_labels.as_ref()),
                            &base.principal,
                            &f.parent,
                            &f.subject,
                            &f.audiences,
                        )
                    });
                    let mut detail = format!(
                        "federated credential {} lets tokens of issuer {} with subject {} act \
                         as {}: lapse did not create it, so no lease ends it",
                        f.name,
                        f.issuer,
                        f.subject,
                        base.principal.short()
                    );
                    if let Some(c) = covered.as_ref().filter(|c| !c.is_empty()) {
                        detail.push_str(&format!(
                            "; AccessPolicy {} already allows this ServiceAccount's federation \
                             just in time",
                            c.join(", ")
                        ));
                    }
                    let note = format!("subject {}", f.subject);
                    report.findings.push(Finding {
                        covered_by: covered,
                        detail,
                        note,
                        ..base
                    });
                }
            }
        }
    }

    fn credentials(&self, report: &mut Report) {
        let now = self.opts.now;
        for app in &self.estate.applications {
            for c in &app.credentials {
                report.tally.credentials += 1;
                if c.end.is_some_and(|end| end <= now) {
                    report.tally.expired_credentials += 1;
                    continue;
                }
                let lifetime = match (c.start, c.end) {
                    (Some(s), Some(e)) => Some(e - s),
                    // Without a start, count from now: at least that long is left.
                    (None, Some(e)) => Some(e - now),
                    (_, None) => None,
                };
                if lifetime.is_some_and(|l| l <= self.opts.max_secret_age) {
                    continue;
                }
                let what = match c.kind {
                    CredentialKind::Secret => "client secret",
                    CredentialKind::Certificate => "certificate",
                };
                let principal = self.app_principal(app);
                let named = c
                    .display_name
                    .as_deref()
                    .map(|n| format!(" {n:?}"))
                    .unwrap_or_default();
                let days = lifetime.map(|l| l.num_days());
                let span = match (c.start, c.end) {
                    (Some(s), Some(e)) => {
                        format!(" ({} to {})", s.format("%Y-%m-%d"), e.format("%Y-%m-%d"))
                    }
                    _ => String::new(),
                };
                let life = match days {
                    Some(d) => format!("lives {d} days{span}"),
                    None => "never expires".to_owned(),
                };
                let expires = c
                    .end
                    .map(|e| format!(", expires {}", time::relative(e, now)))
                    .unwrap_or_default();
                report.findings.push(Finding {
                    kind: FindingKind::LongLivedSecret,
                    object_id: c.key_id.map(|k| k.to_string()).unwrap_or_default(),
                    scope: None,
                    role: Some(format!("{what}{named}")),
                    role_definition_id: None,
                    issuer: None,
                    subject: None,
                    credential: Some(CredentialFacts {
                        kind: c.kind,
                        display_name: c.display_name.clone(),
                        start: c.start,
                        end: c.end,
                        lifetime_days: days,
                    }),
                    covered_by: None,
                    grant: None,
                    locks: Vec::new(),
                    usage: None,
                    detail: format!(
                        "{what}{named} of app registration {} {life}{expires}, longer than \
                         {} days (OWASP NHI-03: overlong credential lifetimes); a leaked copy \
                         works until it expires: prefer a federated credential lapse leases",
                        principal.short(),
                        self.opts.max_secret_age.num_days()
                    ),
                    note: match days {
                        Some(d) => format!("lives {d} days{expires}"),
                        None => "never expires".to_owned(),
                    },
                    principal,
                });
            }
        }
    }
}

impl Context<'_> {
    /// Who a grant is for, as far as the estate names it.
    fn grant_principal(&self, identity: &IdentityRef) -> Principal {
        if let Some(id) = &identity.managed_identity {
            if let Some(i) = self.identity_by_id.get(&id.to_ascii_lowercase()) {
                return self.principal(&i.principal_id);
            }
            return Principal {
                id: id.clone(),
                display_name: id.rsplit('/').next().map(str::to_owned),
                kind: "ManagedIdentity".into(),
                resource_id: Some(id.clone()),
                is_caller: false,
            };
        }
        if let Some(app) = &identity.application {
            if let Some(a) = Uuid::try_parse(&app.object_id)
                .ok()
                .and_then(|id| self.apps.get(&id))
            {
                return self.app_principal(a);
            }
            return Principal {
                id: app.object_id.clone(),
                display_name: None,
                kind: "Application".into(),
                resource_id: None,
                is_caller: false,
            };
        }
        let sp = identity
            .service_principal
            .as_ref()
            .map(|s| s.object_id.clone())
            .unwrap_or_default();
        match Uuid::try_parse(&sp) {
            Ok(id) => self.principal(&id),
            Err(_) => Principal {
                id: sp,
                display_name: None,
                kind: "ServicePrincipal".into(),
                resource_id: None,
                is_caller: false,
            },
        }
    }

    /// The usage evidence the operator recorded: each grant's findings, and the ledger's
    /// findings no grant carries.
    fn usage(&self, report: &mut Report) {
        let finding = |kind: FindingKind,
                       principal: Principal,
                       grant: Option<String>,
                       at: DateTime<Utc>,
                       event: Option<String>,
                       message: &str| {
            let detail = match &grant {
                Some(g) => format!("grant {g}: {message}"),
                None => message.to_owned(),
            };
            Finding {
                kind,
                object_id: event.clone().unwrap_or_default(),
                principal,
                scope: None,
                role: None,
                role_definition_id: None,
                issuer: None,
                subject: None,
                credential: None,
                covered_by: None,
                grant,
                locks: Vec::new(),
                usage: Some(UsageFacts {
                    at,
                    event,
                    message: message.to_owned(),
                }),
                detail,
                note: message.to_owned(),
            }
        };
        for g in self.grants().unwrap_or_default() {
            for u in &g.usage {
                let Some(kind) = FindingKind::parse(&u.kind).filter(|k| k.is_usage()) else {
                    continue;
                };
                report.findings.push(finding(
                    kind,
                    self.grant_principal(&g.identity),
                    Some(g.full_name()),
                    u.at,
                    u.event.clone(),
                    &u.message,
                ));
            }
        }
        for u in self
            .cluster
            .and_then(|c| c.unleased.as_deref())
            .unwrap_or_default()
        {
            if u.kind != lapse_api::usage::FindingKind::UseWithoutLease {
                continue;
            }
            report.findings.push(finding(
                FindingKind::UseWithoutLease,
                self.principal(&u.principal),
                u.grant.clone(),
                u.at,
                u.event.clone(),
                &u.message,
            ));
        }
    }
}

/// The subscriptions (lowercase IDs) holding objects the audit judges as this cluster's
/// lapse objects in ARM: role assignments, and federated credentials of user-assigned
/// identities (an app registration has no locks). Their locks are read, one list per
/// subscription; none when lapse has no object there.
pub fn lock_subscriptions(
    estate: &Estate,
    cluster: Option<&Cluster>,
    opts: &Options,
) -> BTreeSet<String> {
    let ours = Ours::of(estate, cluster);
    let ctx = Context::new(estate, cluster, &ours, opts);
    let mut subs = BTreeSet::new();
    let mut add = |at: &ArmId| {
        if let Some(sub) = at.subscription() {
            subs.insert(sub.to_ascii_lowercase());
        }
    };
    for ra in &estate.role_assignments {
        let Some(scope) = ctx.judged_scope(ra).filter(|_| !is_person(ra)) else {
            continue;
        };
        let marker = ra.description.as_deref().and_then(Marker::parse);
        if matches!(
            ctx.assignment_lapse(ra, &scope, marker.as_ref()),
            Lapse::Ours { .. }
        ) {
            add(&scope);
        }
    }
    for f in &estate.federated_credentials {
        let FicParent::Identity(id) = &f.parent else {
            continue;
        };
        let Ok(identity) = ArmId::parse(id) else {
            continue;
        };
        let marker = f.description.as_deref().and_then(Marker::parse);
        if matches!(
            ctx.fic_lapse(f, &fic_target_key(&f.parent), marker.as_ref()),
            Lapse::Ours { .. }
        ) {
            add(&identity);
        }
    }
    subs
}

/// A role assignment to a person or a group: the audit is about workload identities.
fn is_person(ra: &ListedAssignment) -> bool {
    matches!(
        ra.principal_type.as_deref(),
        Some("User" | "Group" | "ForeignGroup" | "Device")
    )
}

/// The key a federated credential's derived name is built from: its identity's ARM key, or
/// `/applications/{id}`.
fn fic_target_key(parent: &FicParent) -> String {
    match parent {
        FicParent::Identity(id) => {
            ArmId::parse(id).map_or_else(|_| id.to_ascii_lowercase(), |a| a.key().to_owned())
        }
        FicParent::Application(app) => format!("/applications/{app}"),
    }
}

/// The scope a lock sits at, from its ID (`{scope}/providers/Microsoft.Authorization/locks/{name}`).
fn lock_scope(id: &str) -> Option<ArmId> {
    let at = id
        .to_ascii_lowercase()
        .rfind("/providers/microsoft.authorization/locks/")?;
    ArmId::parse(&id[..at]).ok()
}

/// The role definition GUID of a `roleDefinitionId`, whatever its form.
fn role_guid(role_definition_id: &str) -> Option<Uuid> {
    role_definition_id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .and_then(|g| Uuid::try_parse(g).ok())
}

fn id_allowed(list: &[IdMatcher], id: &Uuid) -> bool {
    list.iter().any(|m| match m {
        IdMatcher::Any => true,
        IdMatcher::Exact(x) => x == id,
    })
}

/// Whether a policy's identities admit this principal (in any namespace it covers).
fn identity_allowed(rules: &PolicyRules, principal: &Principal, app: Option<Uuid>) -> bool {
    let by_resource = principal
        .resource_id
        .as_deref()
        .is_some_and(|id| rules.identities.iter().any(|g| g.matches(id)));
    let by_sp = Uuid::try_parse(&principal.id).is_ok_and(|id| {
        principal.kind != "Application" && id_allowed(&rules.service_principals, &id)
    });
    let by_app = app.is_some_and(|a| id_allowed(&rules.applications, &a));
    by_resource || by_sp || by_app
}

/// The valid policies that would allow a grant of `role` at `scope` to this principal.
fn covering_role(
    policies: &[NamedPolicy],
    catalogue: &RoleCatalogue,
    principal: &Principal,
    app: Option<Uuid>,
    role: Option<Uuid>,
    scope: &ArmId,
) -> Vec<String> {
    let Some(role) = role else {
        return Vec::new();
    };
    let mut out: Vec<String> = policies
        .iter()
        .filter(|p| {
            let Ok(rules) = &p.rules else { return false };
            identity_allowed(rules, principal, app)
                && rules
                    .roles
                    .iter()
                    .any(|(_, r)| catalogue.resolve(r).is_ok_and(|r| r.guid == role))
                && rules.scopes.iter().any(|s| scope.is_at_or_below(s))
        })
        .map(|p| p.name.clone())
        .collect();
    out.sort();
    out
}

/// The valid policies that would allow federating this ServiceAccount subject
/// (`system:serviceaccount:<ns>:<sa>`) with the identity; `None` when the subject is not a
/// ServiceAccount's (no policy can allow it).
fn covering_federation(
    policies: &[NamedPolicy],
    labels: Option<&BTreeMap<String, BTreeMap<String, String>>>,
    principal: &Principal,
    parent: &FicParent,
    subject: &str,
    audiences: &[String],
) -> Option<Vec<String>> {
    let rest = subject.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    let no_labels = BTreeMap::new();
    let ns_labels = labels.and_then(|l| l.get(ns)).unwrap_or(&no_labels);
    let app = match parent {
        FicParent::Application(a) => Some(*a),
        FicParent::Identity(_) => None,
    };
    let mut out: Vec<String> = policies
        .iter()
        .filter(|p| {
            let Ok(rules) = &p.rules else { return false };
            let ns_ok = rules.namespaces.iter().any(|g| g.matches(ns))
                || rules
                    .namespace_selector
                    .as_ref()
                    .is_some_and(|s| selector_matches(s, ns_labels));
            let identity_ok = match parent {
                FicParent::Identity(_) => identity_allowed(rules, principal, None),
                FicParent::Application(_) => {
                    app.is_some_and(|a| id_allowed(&rules.applications, &a))
                }
            };
            ns_ok
                && identity_ok
                && rules.service_accounts.iter().any(|g| g.matches(sa))
                && audiences.iter().all(|a| rules.audiences.contains(a))
        })
        .map(|p| p.name.clone())
        .collect();
    out.sort();
    Some(out)
}

#[cfg(test)]
mod tests {
    use lapse_api::lock::LockLevel;
    use lapse_api::v1alpha1::AccessPolicySpec;
    use lapse_api::validate::validate_policy;

    use super::*;

    const SUB: &str = "00000000-0000-4000-8000-00000000a001";
    const CLUSTER_ID: &str = "5b3c6f0e-8a41-4d0c-9a7e-2f6f1c0d9e11";
    const READER: Uuid = Uuid::from_u128(0xacdd72a7_3385_48ef_bd42_f606fba81ae7);
    const CONTRIBUTOR: Uuid = Uuid::from_u128(0xb24988ac_6180_42a0_ab88_20f7382dd24c);
    const UAA: Uuid = Uuid::from_u128(0x18d7d88d_d35e_4fb5_a5c3_7773c20a72d9);
    const RUNNER: Uuid = Uuid::from_u128(1);
    const DEPLOYER: Uuid = Uuid::from_u128(2);
    const ALICE: Uuid = Uuid::from_u128(3);
    const BILLING_APP: Uuid = Uuid::from_u128(4);

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn opts() -> Options {
        Options {
            now: now(),
            max_secret_age: TimeDelta::days(90),
            overstay_after: TimeDelta::seconds(30),
        }
    }

    fn rg() -> String {
        format!("/subscriptions/{SUB}/resourceGroups/app-rg")
    }

    fn runner_id() -> String {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/runner",
            rg()
        )
    }

    fn ra_id(scope: &str, name: &Uuid) -> String {
        format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}")
    }

    fn assignment(principal: Uuid, role: Uuid, scope: &str, name: Uuid) -> ListedAssignment {
        ListedAssignment {
            id: ra_id(scope, &name),
            name,
            scope: scope.to_owned(),
            role_definition_id: format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}"
            ),
            principal_id: principal,
            principal_type: Some("ServicePrincipal".into()),
            description: None,
        }
    }

    fn owner() -> Owner {
        Owner::new("prod", CLUSTER_ID, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A role assignment the operator of cluster `prod` made for `grant`.
    fn lapse_assignment(principal: Uuid, scope: &str, grant: &str) -> ListedAssignment {
        let scope_id = ArmId::parse(scope).unwrap_or_else(|e| panic!("{e}"));
        let name = owner().role_assignment_name(&principal, &READER, &scope_id);
        ListedAssignment {
            description: Some(
                Marker {
                    cluster: "prod".into(),
                    owner: Some(CLUSTER_ID.into()),
                    grant: Some(grant.into()),
                    expires_at: Some(now() - TimeDelta::minutes(5)),
                }
                .to_description(),
            ),
            ..assignment(principal, READER, scope, name)
        }
    }

    fn estate() -> Estate {
        Estate {
            subscriptions: vec![SUB.into()],
            identities: vec![ListedIdentity {
                id: runner_id(),
                name: "runner".into(),
                principal_id: RUNNER,
            }],
            principals: BTreeMap::from([(
                DEPLOYER,
                PrincipalInfo {
                    display_name: Some("ci-deployer".into()),
                    app_id: Some(Uuid::from_u128(40)),
                    kind: Some("Application".into()),
                },
            )]),
            ..Estate::default()
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            cluster_id: Some(CLUSTER_ID.into()),
            grants: Some(Vec::new()),
            policies: Some(Vec::new()),
            namespace_labels: Some(BTreeMap::new()),
            ..Cluster::default()
        }
    }

    fn grant(
        name: &str,
        phase: &str,
        terminal: bool,
        lease_end: Option<i64>,
        ids: &[&str],
    ) -> GrantRecord {
        GrantRecord {
            namespace: "payments".into(),
            name: name.into(),
            phase: phase.into(),
            terminal,
            lease_end: lease_end.map(|s| now() + TimeDelta::seconds(s)),
            objects: ids
                .iter()
                .map(|id| RecordedObject {
                    id: Some((*id).to_owned()),
                    fic_name: None,
                    standing: false,
                })
                .collect(),
            identity: IdentityRef::default(),
            usage: Vec::new(),
        }
    }

    fn policy(name: &str, yaml: &str) -> NamedPolicy {
        let spec: AccessPolicySpec =
            serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        NamedPolicy {
            name: name.into(),
            rules: validate_policy(&spec).map_err(|e| e.to_string()),
        }
    }

    fn kinds(r: &Report) -> Vec<(FindingKind, String)> {
        r.findings
            .iter()
            .map(|f| (f.kind, f.principal.short()))
            .collect()
    }

    #[test]
    fn standing_assignments_to_workloads_are_found_and_users_left_out() {
        let mut e = estate();
        e.role_assignments = vec![
            assignment(DEPLOYER, CONTRIBUTOR, &rg(), Uuid::from_u128(100)),
            assignment(RUNNER, READER, &rg(), Uuid::from_u128(101)),
            ListedAssignment {
                principal_type: Some("User".into()),
                ..assignment(ALICE, READER, &rg(), Uuid::from_u128(102))
            },
            // Above the audited subscription: a management group's.
            assignment(
                DEPLOYER,
                READER,
                "/providers/Microsoft.Management/managementGroups/root",
                Uuid::from_u128(103),
            ),
        ];
        // Listed twice (two subscriptions see a tenant-wide one; pages overlap): counted once.
        e.role_assignments.push(e.role_assignments[0].clone());
        let r = audit(&e, None, &opts());
        assert_eq!(
            kinds(&r),
            [
                (FindingKind::StandingRoleAssignment, "mi/runner".into()),
                (FindingKind::StandingRoleAssignment, "sp/ci-deployer".into()),
            ]
        );
        let runner = &r.findings[0];
        assert_eq!(runner.role.as_deref(), Some("Reader"));
        assert_eq!(
            runner.principal.resource_id.as_deref(),
            Some(runner_id().as_str())
        );
        assert_eq!(runner.covered_by, None, "no cluster: coverage unknown");
        assert_eq!(r.tally.role_assignments, 4);
        assert_eq!(r.tally.user_and_group_assignments, 1);
        assert_eq!(r.tally.above_audited_scopes, 1);
        assert!(
            r.notes.iter().any(|n| n.contains("no cluster")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn this_clusters_objects_are_governed_orphaned_or_overstaying() {
        let storage = format!("{}/providers/Microsoft.Storage/storageAccounts/data", rg());
        let mut e = estate();
        let held = lapse_assignment(RUNNER, &rg(), "payments/live");
        let orphan = lapse_assignment(RUNNER, &storage, "payments/gone");
        let late = lapse_assignment(DEPLOYER, &rg(), "payments/late");
        let ending = lapse_assignment(DEPLOYER, &storage, "payments/ending");
        e.role_assignments = vec![held.clone(), orphan.clone(), late.clone(), ending.clone()];
        let mut c = cluster();
        // The cluster name comes from the markers naming this cluster's ID.
        c.grants = Some(vec![
            grant("live", "Active", false, Some(600), &[&held.id]),
            grant(
                "late",
                "Revoking",
                false,
                Some(-120),
                &[&late.id.to_uppercase()],
            ),
            // Ended 10 s ago: its delete may be in flight.
            grant("ending", "Revoking", false, Some(-10), &[&ending.id]),
        ]);
        let r = audit(&e, Some(&c), &opts());
        assert_eq!(r.cluster_names, ["prod"]);
        assert_eq!(
            kinds(&r),
            [
                (FindingKind::Orphan, "mi/runner".into()),
                (FindingKind::Overstay, "sp/ci-deployer".into()),
            ]
        );
        let o = &r.findings[0];
        assert_eq!(o.object_id, orphan.id);
        assert_eq!(o.grant.as_deref(), Some("payments/gone"));
        assert!(o.detail.contains("no live grant claims it"), "{}", o.detail);
        assert!(
            !o.detail.contains("not the one"),
            "derived names are verified: {}",
            o.detail
        );
        let late_f = &r.findings[1];
        assert_eq!(late_f.grant.as_deref(), Some("payments/late"));
        assert!(late_f.detail.contains("2m ago"), "{}", late_f.detail);
        assert_eq!(r.tally.governed_by_lapse, 2);

        // A shared object: one lease ended, another still holds it.
        let mut c2 = c.clone();
        if let Some(g) = c2.grants.as_mut() {
            g.push(grant("sharer", "Active", false, Some(300), &[&late.id]));
        }
        let r = audit(&e, Some(&c2), &opts());
        assert_eq!(kinds(&r), [(FindingKind::Orphan, "mi/runner".into())]);

        // Without the grants, this cluster's objects are not judged (and not standing).
        let mut blind = c.clone();
        blind.grants = None;
        let r = audit(&e, Some(&blind), &opts());
        assert!(r.findings.is_empty(), "{:?}", kinds(&r));
        assert_eq!(r.tally.unchecked, 4);
    }

    #[test]
    fn markers_of_other_clusters_are_theirs_and_forged_ones_are_orphans() {
        let mut e = estate();
        let foreign = ListedAssignment {
            description: Some(
                "lapse:staging owner=0b3c6f0e-0000-4d0c-9a7e-2f6f1c0d9e11 grant=x/y".into(),
            ),
            ..assignment(RUNNER, READER, &rg(), Uuid::from_u128(200))
        };
        // A hand-written marker with this cluster's name: not a derived name.
        let forged = ListedAssignment {
            description: Some("lapse:prod grant=payments/none".into()),
            ..assignment(DEPLOYER, CONTRIBUTOR, &rg(), Uuid::from_u128(201))
        };
        e.role_assignments = vec![foreign, forged.clone()];
        let mut c = cluster();
        c.cluster_names = vec!["prod".into()];
        let r = audit(&e, Some(&c), &opts());
        assert_eq!(kinds(&r), [(FindingKind::Orphan, "sp/ci-deployer".into())]);
        assert!(
            r.findings[0].detail.contains("not the one"),
            "{}",
            r.findings[0].detail
        );
        assert_eq!(r.tally.other_clusters, 1);
        // Without the cluster, whose they are is unknown: lapse's objects are left unjudged
        // (and said so), never called standing.
        let r = audit(&e, None, &opts());
        assert!(r.findings.is_empty(), "{:?}", kinds(&r));
        assert_eq!((r.tally.unchecked, r.tally.other_clusters), (2, 0));
    }

    #[test]
    fn federated_credentials_lapse_did_not_create_are_standing() {
        let mut e = estate();
        let target = ArmId::parse(&runner_id()).unwrap_or_else(|err| panic!("{err}"));
        let subject = "system:serviceaccount:payments:backup-runner";
        let ours = owner().fic_name(target.key(), subject);
        let fic = |name: &str, issuer: &str, subject: &str| ListedFic {
            id: format!("{}/federatedIdentityCredentials/{name}", runner_id()),
            name: name.into(),
            parent: FicParent::Identity(runner_id()),
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
            description: None,
        };
        e.federated_credentials = vec![
            fic(
                "github-main",
                "https://token.actions.githubusercontent.com",
                "repo:contoso/etl:ref:refs/heads/main",
            ),
            fic("by-hand", "https://oidc.example/prod", subject),
            fic(&ours, "https://oidc.example/prod", subject),
            fic(
                "lapse-staging-0123456789abcdef0123456789abcdef",
                "https://oidc.example/staging",
                subject,
            ),
        ];
        let mut c = cluster();
        c.cluster_names = vec!["prod".into()];
        c.grants = Some(vec![GrantRecord {
            objects: vec![RecordedObject {
                id: None,
                fic_name: Some(ours.clone()),
                standing: false,
            }],
            ..grant("live", "Active", false, Some(600), &[])
        }]);
        c.policies = Some(vec![policy(
            "payments",
            &format!(
                "namespaces: [payments]\nidentities: ['{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*']\nroles: [Reader]\nscopes: ['{}']\nserviceAccounts: ['backup-*']\nmaxDuration: 1h\n",
                rg(),
                rg()
            ),
        )]);
        let r = audit(&e, Some(&c), &opts());
        type Seen<'a> = (FindingKind, Option<&'a str>, Option<Vec<String>>);
        let found: Vec<Seen<'_>> = r
            .findings
            .iter()
            .map(|f| (f.kind, f.subject.as_deref(), f.covered_by.clone()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    FindingKind::StandingFederation,
                    Some(subject),
                    Some(vec!["payments".to_owned()])
                ),
                (
                    FindingKind::StandingFederation,
                    Some("repo:contoso/etl:ref:refs/heads/main"),
                    None
                ),
            ]
        );
        assert_eq!(r.tally.governed_by_lapse, 1);
        assert_eq!(r.tally.other_clusters, 1);
        assert_eq!(
            r.findings[1].issuer.as_deref(),
            Some("https://token.actions.githubusercontent.com")
        );
    }

    #[test]
    fn secrets_and_certificates_beyond_the_threshold_are_long_lived() {
        let mut e = estate();
        let cred = |kind, name: &str, start: i64, end: Option<i64>| ListedCredential {
            kind,
            key_id: Some(Uuid::from_u128(start.unsigned_abs().into())),
            display_name: Some(name.into()),
            start: Some(now() + TimeDelta::days(start)),
            end: end.map(|d| now() + TimeDelta::days(d)),
        };
        e.applications = vec![ListedApplication {
            id: BILLING_APP,
            app_id: Uuid::from_u128(41),
            display_name: Some("billing".into()),
            credentials: vec![
                cred(CredentialKind::Secret, "prod", -30, Some(700)),
                cred(CredentialKind::Secret, "rotation", -10, Some(20)),
                cred(CredentialKind::Certificate, "cert", -1, Some(364)),
                cred(CredentialKind::Secret, "old", -900, Some(-100)),
                cred(CredentialKind::Secret, "forever", -2, None),
                // Exactly the threshold is within it.
                cred(CredentialKind::Secret, "ninety", -3, Some(87)),
            ],
        }];
        let r = audit(&e, None, &opts());
        let roles: Vec<(&str, Option<i64>)> = r
            .findings
            .iter()
            .map(|f| {
                (
                    f.role.as_deref().unwrap_or_default(),
                    f.credential.as_ref().and_then(|c| c.lifetime_days),
                )
            })
            .collect();
        assert_eq!(
            roles,
            [
                ("certificate \"cert\"", Some(365)),
                ("client secret \"forever\"", None),
                ("client secret \"prod\"", Some(730)),
            ]
        );
        assert!(
            r.findings
                .iter()
                .all(|f| f.kind == FindingKind::LongLivedSecret)
        );
        assert_eq!(r.findings[0].principal.short(), "app/billing");
        assert_eq!(r.tally.expired_credentials, 1);
        assert_eq!(r.tally.credentials, 6);
        // A lower threshold finds more.
        let strict = Options {
            max_secret_age: TimeDelta::days(7),
            ..opts()
        };
        assert_eq!(audit(&e, None, &strict).findings.len(), 5);
    }

    #[test]
    fn coverage_names_the_policies_that_allow_it_just_in_time() {
        let mut e = estate();
        e.role_assignments = vec![
            assignment(RUNNER, READER, &rg(), Uuid::from_u128(300)),
            assignment(RUNNER, CONTRIBUTOR, &rg(), Uuid::from_u128(301)),
            assignment(
                DEPLOYER,
                READER,
                &format!("/subscriptions/{SUB}"),
                Uuid::from_u128(302),
            ),
            assignment(DEPLOYER, UAA, &rg(), Uuid::from_u128(303)),
        ];
        e.caller = Some(DEPLOYER);
        let mut c = cluster();
        c.policies = Some(vec![
            policy(
                "mi-readers",
                &format!(
                    "namespaces: ['*']\nidentities: ['{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*']\nroles: [Reader]\nscopes: ['{}']\nmaxDuration: 1h\n",
                    rg(),
                    rg()
                ),
            ),
            policy(
                "sp-any",
                &format!(
                    "namespaces: [ci]\nservicePrincipals: ['*']\nroles: [Reader]\nscopes: ['/subscriptions/{SUB}/resourceGroups/app-rg']\nmaxDuration: 1h\n"
                ),
            ),
            policy(
                "broken",
                "namespaces: [x]\nroles: [Reader]\nscopes: [nope]\nmaxDuration: 1h\n",
            ),
        ]);
        let r = audit(&e, Some(&c), &opts());
        let covered: Vec<(String, Option<Vec<String>>)> = r
            .findings
            .iter()
            .map(|f| {
                (
                    format!(
                        "{} {}",
                        f.principal.short(),
                        f.role.as_deref().unwrap_or_default()
                    ),
                    f.covered_by.clone(),
                )
            })
            .collect();
        assert_eq!(
            covered,
            [
                // The managed identity's service principal is a service principal too.
                (
                    "mi/runner Reader".to_owned(),
                    Some(vec!["mi-readers".to_owned(), "sp-any".to_owned()])
                ),
                ("mi/runner Contributor".to_owned(), Some(vec![])),
                // At the subscription: above sp-any's scope.
                ("sp/ci-deployer Reader".to_owned(), Some(vec![])),
                (
                    "sp/ci-deployer User Access Administrator".to_owned(),
                    Some(vec![])
                ),
            ]
        );
        let uaa = &r.findings[3];
        assert!(uaa.detail.contains("privileged"), "{}", uaa.detail);
        assert!(uaa.principal.is_caller);
        assert!(
            uaa.note.contains("the audit's own principal"),
            "{}",
            uaa.note
        );
        assert!(
            r.findings[0].detail.contains("already allows it"),
            "{}",
            r.findings[0].detail
        );
    }

    #[test]
    fn a_standing_assignment_a_grant_uses_is_still_standing_and_says_so() {
        let mut e = estate();
        let ra = assignment(RUNNER, READER, &rg(), Uuid::from_u128(400));
        e.role_assignments = vec![ra.clone()];
        let mut c = cluster();
        c.grants = Some(vec![GrantRecord {
            objects: vec![RecordedObject {
                id: Some(ra.id.clone()),
                fic_name: None,
                standing: true,
            }],
            ..grant("uses", "Active", false, Some(60), &[])
        }]);
        let r = audit(&e, Some(&c), &opts());
        assert_eq!(
            kinds(&r),
            [(FindingKind::StandingRoleAssignment, "mi/runner".into())]
        );
        assert!(
            r.findings[0].detail.contains("payments/uses"),
            "{}",
            r.findings[0].detail
        );
    }

    fn mgmt_lock(scope: &str, name: &str, level: LockLevel) -> ManagementLock {
        ManagementLock {
            id: format!("{scope}/providers/Microsoft.Authorization/locks/{name}"),
            name: name.into(),
            level,
            notes: None,
        }
    }

    #[test]
    fn this_clusters_objects_under_a_lock_are_reported_naming_it() {
        let storage = format!("{}/providers/Microsoft.Storage/storageAccounts/data", rg());
        let other_rg = format!("/subscriptions/{SUB}/resourceGroups/other-rg");
        let mut e = estate();
        let held = lapse_assignment(RUNNER, &storage, "payments/live");
        let orphan = lapse_assignment(DEPLOYER, &rg(), "payments/gone");
        let free = lapse_assignment(RUNNER, &other_rg, "payments/free");
        let standing = assignment(DEPLOYER, CONTRIBUTOR, &storage, Uuid::from_u128(500));
        let foreign = ListedAssignment {
            description: Some(
                "lapse:staging owner=0b3c6f0e-0000-4d0c-9a7e-2f6f1c0d9e11 grant=x/y".into(),
            ),
            ..assignment(RUNNER, READER, &storage, Uuid::from_u128(501))
        };
        e.role_assignments = vec![held.clone(), orphan.clone(), free, standing, foreign];
        let target = ArmId::parse(&runner_id()).unwrap_or_else(|err| panic!("{err}"));
        let subject = "system:serviceaccount:payments:runner";
        let fic_name = owner().fic_name(target.key(), subject);
        e.federated_credentials = vec![ListedFic {
            id: format!("{}/federatedIdentityCredentials/{fic_name}", runner_id()),
            name: fic_name.clone(),
            parent: FicParent::Identity(runner_id()),
            issuer: "https://oidc.example/prod".into(),
            subject: subject.into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
            description: None,
        }];
        let mut c = cluster();
        c.grants = Some(vec![
            grant("live", "Active", false, Some(600), &[&held.id]),
            GrantRecord {
                objects: vec![RecordedObject {
                    id: None,
                    fic_name: Some(fic_name.clone()),
                    standing: false,
                }],
                ..grant("fed", "Active", false, Some(900), &[])
            },
        ]);
        // Only lapse's objects decide where locks are read: this one subscription.
        assert_eq!(
            lock_subscriptions(&e, Some(&c), &opts()),
            BTreeSet::from([SUB.to_owned()])
        );
        let keep = mgmt_lock(&rg(), "keep", LockLevel::CanNotDelete);
        let frozen = mgmt_lock(&storage, "frozen", LockLevel::ReadOnly);
        // Below the objects' scopes, or beside them: no lock on them.
        let beside = mgmt_lock(
            &format!("{}/providers/Microsoft.KeyVault/vaults/kv", rg()),
            "kv",
            LockLevel::CanNotDelete,
        );
        e.locks = Some(vec![keep.clone(), frozen.clone(), beside]);
        let r = audit(&e, Some(&c), &opts());
        let locked: Vec<(&str, Vec<&str>, Option<&str>)> = r
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::LockedLapseObject)
            .map(|f| {
                (
                    f.object_id.as_str(),
                    f.locks.iter().map(|l| l.name.as_str()).collect(),
                    f.grant.as_deref(),
                )
            })
            .collect();
        let fic_id = e.federated_credentials[0].id.as_str();
        assert_eq!(
            locked,
            [
                (fic_id, vec!["keep"], Some("payments/fed")),
                (
                    held.id.as_str(),
                    vec!["keep", "frozen"],
                    Some("payments/live")
                ),
                (orphan.id.as_str(), vec!["keep"], Some("payments/gone")),
            ]
        );
        // The orphans are still orphans (one of them unlocked); the standing assignment is
        // standing and the other cluster's object not judged here.
        assert_eq!(
            r.findings
                .iter()
                .filter(|f| f.kind != FindingKind::LockedLapseObject)
                .map(|f| f.kind)
                .collect::<Vec<_>>(),
            [
                FindingKind::StandingRoleAssignment,
                FindingKind::Orphan,
                FindingKind::Orphan
            ]
        );
        let live = r
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::LockedLapseObject && f.object_id == held.id)
            .unwrap_or_else(|| panic!("no finding for the held assignment"));
        assert!(
            live.detail.contains(&format!(
                "management locks \"keep\" (CanNotDelete, {}), \"frozen\" (ReadOnly, {})",
                keep.id, frozen.id
            )) && live.detail.contains("grant payments/live (lease until ")
                && live
                    .detail
                    .contains("its revocation will be blocked (RevocationBlocked)"),
            "{}",
            live.detail
        );
        assert_eq!(
            live.note,
            "lock keep (CanNotDelete) and 1 more; revocation will be blocked"
        );
        assert_eq!(live.locks[1].scope, storage);
        assert_eq!(live.locks[1].level, "ReadOnly");
        let gone = r
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::LockedLapseObject && f.object_id == orphan.id)
            .unwrap_or_else(|| panic!("no finding for the orphan"));
        assert!(
            gone.detail.contains("no live lease holds it"),
            "{}",
            gone.detail
        );

        // Without the cluster, any lapse cluster's object may be this one's (the other
        // cluster's too): their locks are reported all the same.
        let blind = audit(&e, None, &opts());
        assert_eq!(
            blind
                .findings
                .iter()
                .filter(|f| f.kind == FindingKind::LockedLapseObject)
                .count(),
            4,
            "{:?}",
            kinds(&blind)
        );
        // Locks not read: nothing said of them (the audit notes it as not checked).
        e.locks = None;
        assert!(
            audit(&e, Some(&c), &opts())
                .findings
                .iter()
                .all(|f| f.kind != FindingKind::LockedLapseObject)
        );
        // No object of lapse's: no lock is read at all.
        e.role_assignments.drain(..3);
        e.federated_credentials.clear();
        assert!(lock_subscriptions(&e, Some(&c), &opts()).is_empty());
    }

    #[test]
    fn usage_findings_come_from_the_grants_and_the_ledger_naming_grant_and_principal() {
        let e = estate();
        let mut c = cluster();
        let finding = |kind: &str, s: i64, event: Option<&str>, message: &str| UsageFinding {
            kind: kind.into(),
            at: now() + TimeDelta::seconds(s),
            event: event.map(str::to_owned),
            message: message.into(),
        };
        c.grants = Some(vec![
            GrantRecord {
                identity: IdentityRef {
                    managed_identity: Some(runner_id()),
                    ..IdentityRef::default()
                },
                usage: vec![
                    finding("SensitiveAction", -60, Some("ev-1"), "deleted a vault"),
                    finding("UseAfterEnd", -30, Some("ev-2"), "after the end"),
                    // A kind this audit does not know is left out.
                    finding("Mystery", -10, None, "?"),
                ],
                ..grant("etl", "Expired", true, Some(-600), &[])
            },
            GrantRecord {
                identity: IdentityRef {
                    service_principal: Some(lapse_api::v1alpha1::ObjectIdRef {
                        object_id: DEPLOYER.to_string(),
                    }),
                    ..IdentityRef::default()
                },
                usage: vec![
                    finding("UnusedGrant", -5, None, "not needed"),
                    finding("RightSize", -5, None, "Reader would do"),
                    finding("PrivilegeChain", -50, Some("ev-3"), "gave access"),
                ],
                ..grant("deploy", "Expired", true, Some(-600), &[])
            },
        ]);
        c.unleased = Some(vec![UsageLogFinding {
            kind: lapse_api::usage::FindingKind::UseWithoutLease,
            at: now() - TimeDelta::seconds(100),
            grant: None,
            principal: DEPLOYER,
            event: Some("ev-4".into()),
            resource: None,
            message: "acted with no lease covering it".into(),
            revoke: false,
        }]);
        c.ledger_note = Some("a ledger note".into());
        let r = audit(&e, Some(&c), &opts());
        let got: Vec<(FindingKind, String, Option<&str>, &str)> = r
            .findings
            .iter()
            .map(|f| {
                (
                    f.kind,
                    f.principal.short(),
                    f.grant.as_deref(),
                    f.object_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    FindingKind::UseAfterEnd,
                    "mi/runner".to_owned(),
                    Some("payments/etl"),
                    "ev-2"
                ),
                (
                    FindingKind::UseWithoutLease,
                    "sp/ci-deployer".to_owned(),
                    None,
                    "ev-4"
                ),
                (
                    FindingKind::SensitiveAction,
                    "mi/runner".to_owned(),
                    Some("payments/etl"),
                    "ev-1"
                ),
                (
                    FindingKind::PrivilegeChain,
                    "sp/ci-deployer".to_owned(),
                    Some("payments/deploy"),
                    "ev-3"
                ),
                (
                    FindingKind::UnusedGrant,
                    "sp/ci-deployer".to_owned(),
                    Some("payments/deploy"),
                    ""
                ),
                (
                    FindingKind::RightSize,
                    "sp/ci-deployer".to_owned(),
                    Some("payments/deploy"),
                    ""
                ),
            ]
        );
        let sensitive = &r.findings[2];
        assert_eq!(sensitive.detail, "grant payments/etl: deleted a vault");
        assert_eq!(
            sensitive.usage.as_ref().map(|u| (u.at, u.event.as_deref())),
            Some((now() - TimeDelta::seconds(60), Some("ev-1")))
        );
        assert!(
            r.notes.contains(&"a ledger note".to_owned()),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn kinds_parse_case_insensitively() {
        assert_eq!(FindingKind::parse("orphan"), Some(FindingKind::Orphan));
        assert_eq!(
            FindingKind::parse(" LongLivedSecret "),
            Some(FindingKind::LongLivedSecret)
        );
        assert_eq!(FindingKind::parse("Secret"), None);
    }
}
