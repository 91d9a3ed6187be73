//! Deterministic names for the Azure objects lapse creates, and what decides that lapse owns
//! one.
//!
//! Names are derived, never random, so a restarted operator finds what it created before and a
//! retried PUT lands on the same object. The seed of every name is the [`Owner`]: the cluster
//! name, the cluster's own identity (its `kube-system` namespace UID) and, for operators that
//! watch only some namespaces, a shard name. Two clusters, or two shards of one, never derive
//! the same name, so neither can mistake the other's objects for its own.
//!
//! **Ownership is the derived name** (for a FIC, with this operator's issuer), never the
//! description: Azure descriptions can be edited by anyone with write access, and an edited
//! description must neither make lapse abandon its own object (the access would outlive its
//! lease) nor make it delete someone else's. The description marker is for people and for
//! spotting a second operator that uses the same cluster name (a "twin").
//!
//! These derivations are a compatibility contract: changing any of them orphans every object
//! created by an earlier version (docs/architecture.md, "Ownership").

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::arm::ArmId;

/// The UUIDv5 namespace of every lapse name. Never change it.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x532dc5bd_1d8c_400b_abb7_b7b6803d366f);

/// Longest cluster name: a DNS-1123 label.
pub const MAX_CLUSTER_NAME_LEN: usize = 63;
/// Longest cluster ID (a Kubernetes UID is 36 characters).
pub const MAX_CLUSTER_ID_LEN: usize = 64;
/// Longest description lapse writes on a role assignment.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

const MARKER_PREFIX: &str = "lapse:";
const FIC_PREFIX: &str = "lapse-";
/// `-` and 32 lowercase hex digits.
const FIC_SUFFIX_LEN: usize = 33;
/// PIM request types, as Azure spells them (and as the request names' seeds do).
pub const SCHEDULE_ASSIGN: &str = "AdminAssign";
pub const SCHEDULE_EXTEND: &str = "AdminExtend";
pub const SCHEDULE_UPDATE: &str = "AdminUpdate";
pub const SCHEDULE_REMOVE: &str = "AdminRemove";

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum NamingError {
    #[error("cluster name `{name}` is invalid: {reason}")]
    InvalidClusterName { name: String, reason: String },
    #[error("cluster ID `{id}` is invalid: {reason}")]
    InvalidClusterId { id: String, reason: String },
    #[error("shard `{name}` is invalid: {reason}")]
    InvalidShard { name: String, reason: String },
}

/// The one operator (of one cluster, and of one shard of it) that owns an Azure object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    cluster: String,
    cluster_id: String,
    shard: Option<String>,
}

impl Owner {
    /// `cluster` is a DNS label; `cluster_id` is this cluster's identity (the `kube-system`
    /// namespace UID: unique per cluster and not writable from inside it); `shard` names this
    /// operator among several that share the cluster, each watching its own namespaces.
    pub fn new(cluster: &str, cluster_id: &str, shard: Option<&str>) -> Result<Self, NamingError> {
        validate_cluster_name(cluster)?;
        let bad_id = |reason: &str| NamingError::InvalidClusterId {
            id: cluster_id.to_owned(),
            reason: reason.to_owned(),
        };
        if cluster_id.is_empty() {
            return Err(bad_id("it is empty"));
        }
        if cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return Err(bad_id("it is longer than 64 characters"));
        }
        if !cluster_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad_id("use letters, digits and `-` (a Kubernetes UID)"));
        }
        if let Some(s) = shard {
            validate_cluster_name(s).map_err(|e| NamingError::InvalidShard {
                name: s.to_owned(),
                reason: match e {
                    NamingError::InvalidClusterName { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
        }
        Ok(Self {
            cluster: cluster.to_owned(),
            cluster_id: cluster_id.to_ascii_lowercase(),
            shard: shard.map(str::to_owned),
        })
    }

    /// The cluster name (`LAPSE_CLUSTER_NAME`).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The cluster ID and shard as the marker's `owner=` field writes them.
    pub fn id(&self) -> String {
        match &self.shard {
            Some(s) => format!("{}/{s}", self.cluster_id),
            None => self.cluster_id.clone(),
        }
    }

    /// `cluster|cluster_id|shard`: no part contains `|`, so the seed is unambiguous.
    fn seed(&self) -> String {
        format!(
            "{}|{}|{}",
            self.cluster,
            self.cluster_id,
            self.shard.as_deref().unwrap_or("")
        )
    }

    /// The role assignment name for (owner, principal, role definition, scope): UUIDv5 of
    /// `seed|principal|role|scope key`.
    pub fn role_assignment_name(
        &self,
        principal_id: &Uuid,
        role_guid: &Uuid,
        scope: &ArmId,
    ) -> Uuid {
        // Uuid's Display is lowercase and hyphenated.
        let seed = format!("{}|{principal_id}|{role_guid}|{}", self.seed(), scope.key());
        Uuid::new_v5(&NAMESPACE, seed.as_bytes())
    }

    /// The federated identity credential name for (owner, identity, subject):
    /// `lapse-<cluster>-<32 hex>`, at most 102 characters, matching Azure's
    /// `^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$` for every valid cluster name.
    pub fn fic_name(&self, identity_key: &str, subject: &str) -> String {
        let seed = format!("{}|{identity_key}|{subject}", self.seed());
        format!(
            "{FIC_PREFIX}{}-{}",
            self.cluster,
            Uuid::new_v5(&NAMESPACE, seed.as_bytes()).simple()
        )
    }

    /// The name of a PIM schedule request (`AdminAssign`, `AdminExtend`, `AdminUpdate`,
    /// `AdminRemove`) for (owner, principal, role, scope) at `at` (the schedule's start for an
    /// assignment or removal, its new end for an extension or update): UUIDv5 of
    /// `seed|schedule|kind|principal|role|scope key|at`. The same request made again has the
    /// same name (Azure answers it idempotently); a new one has a new name.
    pub fn schedule_request_name(
        &self,
        kind: &str,
        principal_id: &Uuid,
        role_guid: &Uuid,
        scope: &ArmId,
        at: DateTime<Utc>,
    ) -> Uuid {
        let seed = format!(
            "{}|schedule|{kind}|{principal_id}|{role_guid}|{}|{}",
            self.seed(),
            scope.key(),
            at.timestamp()
        );
        Uuid::new_v5(&NAMESPACE, seed.as_bytes())
    }

    /// Whether a listed PIM schedule is this owner's: the request that last shaped it is one
    /// this owner derives for the schedule's own tuple, start (an assignment) or end (an
    /// extension or update). Azure names the assignment and the schedule itself; the
    /// request's name is the only name lapse chooses.
    #[allow(clippy::too_many_arguments)]
    pub fn owns_schedule(
        &self,
        request_name: &Uuid,
        principal_id: &Uuid,
        role_guid: &Uuid,
        scope: &ArmId,
        starts_at: Option<DateTime<Utc>>,
        ends_at: Option<DateTime<Utc>>,
    ) -> bool {
        let name = |kind: &str, at: Option<DateTime<Utc>>| {
            at.map(|at| self.schedule_request_name(kind, principal_id, role_guid, scope, at))
        };
        [
            name(SCHEDULE_ASSIGN, starts_at),
            name(SCHEDULE_EXTEND, ends_at),
            name(SCHEDULE_UPDATE, ends_at),
        ]
        .contains(&Some(*request_name))
    }

    /// Whether a listed role assignment is this owner's: its name is the one this owner derives
    /// for the assignment's own (principal, role, scope). Its description is not consulted.
    pub fn owns_role_assignment(
        &self,
        name: &Uuid,
        principal_id: &Uuid,
        role_guid: &Uuid,
        scope: &ArmId,
    ) -> bool {
        *name == self.role_assignment_name(principal_id, role_guid, scope)
    }

    /// Whether a listed FIC is this owner's: its name is the one this owner derives for its own
    /// target and subject, and its issuer is `issuer` (this operator's).
    pub fn owns_fic(
        &self,
        name: &str,
        identity_key: &str,
        fic_issuer: &str,
        subject: &str,
        issuer: &str,
    ) -> bool {
        fic_issuer == issuer && name == self.fic_name(identity_key, subject)
    }

    /// An object that is not this owner's but looks like lapse's for this cluster name: another
    /// operator runs with the same `LAPSE_CLUSTER_NAME` (another cluster, another shard, or a
    /// changed issuer). Such objects are reported and never swept.
    pub fn is_twin(&self, description: Option<&str>, fic_name: Option<&str>) -> bool {
        let by_marker = description
            .and_then(Marker::parse)
            .is_some_and(|m| m.cluster == self.cluster);
        let by_name = fic_name.and_then(fic_cluster) == Some(self.cluster.as_str());
        by_marker || by_name
    }
}

/// The cluster a FIC name produced by [`Owner::fic_name`] belongs to, or `None` if it is not a
/// lapse name.
pub fn fic_cluster(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(FIC_PREFIX)?;
    let split = rest.len().checked_sub(FIC_SUFFIX_LEN)?;
    let (cluster, suffix) = (rest.get(..split)?, rest.get(split..)?);
    let hex = suffix.strip_prefix('-')?;
    let is_lower_hex = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_lower_hex && validate_cluster_name(cluster).is_ok()).then_some(cluster)
}

/// A cluster name is a DNS-1123 label: `^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`.
pub fn validate_cluster_name(s: &str) -> Result<(), NamingError> {
    let invalid = |reason: String| NamingError::InvalidClusterName {
        name: s.to_owned(),
        reason,
    };
    if s.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if s.len() > MAX_CLUSTER_NAME_LEN {
        return Err(invalid(format!(
            "it is {} characters long; the maximum is {MAX_CLUSTER_NAME_LEN}",
            s.len()
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(invalid(format!(
            "`{}` is not allowed; use lowercase letters, digits and `-`",
            c.escape_default()
        )));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(invalid(
            "it must start and end with a letter or digit".into(),
        ));
    }
    Ok(())
}

/// The marker and detail lapse writes into the description of what it creates:
/// `lapse:<cluster> owner=<cluster ID>[/<shard>] grant=<namespace>/<name> expires=<RFC 3339>`,
/// all but the first optional. It tells people (and the estate audit) who made an object and
/// why; it does not decide ownership (see [`Owner`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub cluster: String,
    /// [`Owner::id`] of the operator that created the object.
    pub owner: Option<String>,
    /// `namespace/name` of the grant that created the object.
    pub grant: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Marker {
    /// The description text, at most [`MAX_DESCRIPTION_LEN`] bytes for a valid cluster name.
    /// When too long, the grant is shortened (ending in `...`); the marker and the expiry never are.
    /// Whitespace in the grant becomes `_` so the fields stay separable.
    pub fn to_description(&self) -> String {
        let mut out = format!("{MARKER_PREFIX}{}", self.cluster);
        if let Some(owner) = self.owner.as_deref().filter(|o| {
            !o.is_empty()
                && o.len() <= MAX_CLUSTER_ID_LEN + 1 + MAX_CLUSTER_NAME_LEN
                && o.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/')
        }) {
            out.push_str(" owner=");
            out.push_str(owner);
        }
        let expires = self
            .expires_at
            .map(|t| {
                format!(
                    " expires={}",
                    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                )
            })
            .unwrap_or_default();
        if let Some(grant) = self.grant.as_deref().filter(|g| !g.is_empty()) {
            let grant: String = grant
                .chars()
                .map(|c| {
                    if c.is_whitespace() || c.is_control() {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            let budget =
                MAX_DESCRIPTION_LEN.saturating_sub(out.len() + expires.len() + " grant=".len());
            if grant.len() <= budget {
                out.push_str(" grant=");
                out.push_str(&grant);
            } else if budget > "...".len() {
                out.push_str(" grant=");
                out.push_str(truncate_at_char(&grant, budget - "...".len()));
                out.push_str("...");
            }
        }
        out.push_str(&expires);
        out
    }

    /// Reads a description written by [`Marker::to_description`]. `None` unless it starts with
    /// `lapse:<valid cluster name>` followed by the end or a space. Unknown fields are ignored;
    /// an unreadable expiry reads as `None`.
    pub fn parse(description: &str) -> Option<Marker> {
        let rest = description.strip_prefix(MARKER_PREFIX)?;
        let (cluster, fields) = rest.split_once(' ').unwrap_or((rest, ""));
        validate_cluster_name(cluster).ok()?;
        let mut marker = Marker {
            cluster: cluster.to_owned(),
            owner: None,
            grant: None,
            expires_at: None,
        };
        for field in fields.split(' ') {
            // The first occurrence of a field wins.
            if let Some(owner) = field.strip_prefix("owner=") {
                let owner = (!owner.is_empty()).then(|| owner.to_owned());
                marker.owner = marker.owner.take().or(owner);
            } else if let Some(grant) = field.strip_prefix("grant=") {
                let grant = (!grant.is_empty()).then(|| grant.to_owned());
                marker.grant = marker.grant.take().or(grant);
            } else if let Some(expires) = field.strip_prefix("expires=") {
                let expires = DateTime::parse_from_rfc3339(expires).ok();
                marker.expires_at = marker.expires_at.or(expires.map(|t| t.with_timezone(&Utc)));
            }
        }
        Some(marker)
    }
}

fn truncate_at_char(s: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRINCIPAL: Uuid = Uuid::from_u128(0x0f0e0d0c_0b0a_4908_8706_050403020100);
    const ROLE: Uuid = Uuid::from_u128(0xacdd72a7_3385_48ef_bd42_f606fba81ae7);
    const CLUSTER_ID: &str = "5b3c6f0e-8a41-4d0c-9a7e-2f6f1c0d9e11";
    const SCOPE: &str =
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Payments-RG";
    const MI: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/payments-rg/providers/microsoft.managedidentity/userassignedidentities/backup";
    const SUBJECT: &str = "system:serviceaccount:payments:backup-runner";
    const ISSUER: &str = "https://oidc.example.test/cluster";
    const FIC_PATTERN: &str = "^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$";
    const CLUSTER_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

    fn scope(s: &str) -> ArmId {
        ArmId::parse(s).unwrap()
    }

    fn owner(cluster: &str) -> Owner {
        Owner::new(cluster, CLUSTER_ID, None).unwrap()
    }

    #[test]
    fn names_are_pinned_across_versions() {
        // Computed independently (Python uuid.uuid5). Changing them orphans every object an
        // earlier release created.
        let prod = owner("prod");
        assert_eq!(
            prod.role_assignment_name(&PRINCIPAL, &ROLE, &scope(SCOPE))
                .to_string(),
            "75883142-d57b-55e6-88e4-502d303376ad"
        );
        assert_eq!(
            prod.fic_name(MI, SUBJECT),
            "lapse-prod-c20a480437d155a08b9c42b36dade8fb"
        );
        let shard = Owner::new("prod", CLUSTER_ID, Some("eu")).unwrap();
        assert_eq!(
            shard
                .role_assignment_name(&PRINCIPAL, &ROLE, &scope(SCOPE))
                .to_string(),
            "484fdf45-6bc1-5b4e-b242-c4cbd655d5e0"
        );
    }

    #[test]
    fn role_assignment_names_ignore_scope_spelling() {
        let prod = owner("prod");
        let name = prod.role_assignment_name(&PRINCIPAL, &ROLE, &scope(SCOPE));
        for variant in [
            format!("{SCOPE}/"),
            SCOPE.to_uppercase(),
            SCOPE.to_lowercase(),
            "/Subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/payments-rg/"
                .to_owned(),
        ] {
            assert_eq!(
                prod.role_assignment_name(&PRINCIPAL, &ROLE, &scope(&variant)),
                name,
                "{variant}"
            );
        }
        assert_eq!(name.get_version_num(), 5);
    }

    #[test]
    fn names_depend_on_the_whole_owner() {
        let base = owner("prod");
        let name = base.role_assignment_name(&PRINCIPAL, &ROLE, &scope(SCOPE));
        let fic = base.fic_name(MI, SUBJECT);
        let others = [
            owner("prod2"),
            Owner::new("prod", "6b3c6f0e-8a41-4d0c-9a7e-2f6f1c0d9e11", None).unwrap(),
            Owner::new("prod", CLUSTER_ID, Some("eu")).unwrap(),
            Owner::new("prod", CLUSTER_ID, Some("us")).unwrap(),
        ];
        for other in &others {
            assert_ne!(
                other.role_assignment_name(&PRINCIPAL, &ROLE, &scope(SCOPE)),
                name,
                "{other:?}"
            );
            assert_ne!(other.fic_name(MI, SUBJECT), fic, "{other:?}");
            assert!(!other.owns_role_assignment(&name, &PRINCIPAL, &ROLE, &scope(SCOPE)));
            assert!(!other.owns_fic(&fic, MI, ISSUER, SUBJECT, ISSUER));
        }
        // A cluster ID is a UID: case does not make another cluster.
        assert_eq!(
            Owner::new("prod", &CLUSTER_ID.to_uppercase(), None).unwrap(),
            base
        );
    }

    #[test]
    fn a_schedule_is_owned_by_the_request_that_last_shaped_it() {
        let prod = owner("prod");
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let end = start + chrono::TimeDelta::hours(1);
        let s = scope(SCOPE);
        let assign = prod.schedule_request_name(SCHEDULE_ASSIGN, &PRINCIPAL, &ROLE, &s, start);
        let extend = prod.schedule_request_name(SCHEDULE_EXTEND, &PRINCIPAL, &ROLE, &s, end);
        for request in [assign, extend] {
            assert!(prod.owns_schedule(&request, &PRINCIPAL, &ROLE, &s, Some(start), Some(end)));
        }
        // Another owner, another tuple, a request lapse did not name, a moved start: not ours.
        assert!(!owner("dev").owns_schedule(
            &assign,
            &PRINCIPAL,
            &ROLE,
            &s,
            Some(start),
            Some(end)
        ));
        let other = Uuid::from_u128(7);
        assert!(!prod.owns_schedule(&assign, &other, &ROLE, &s, Some(start), Some(end)));
        assert!(!prod.owns_schedule(&other, &PRINCIPAL, &ROLE, &s, Some(start), Some(end)));
        let later = start + chrono::TimeDelta::seconds(1);
        assert!(!prod.owns_schedule(&assign, &PRINCIPAL, &ROLE, &s, Some(later), Some(end)));
        // The removal's name is neither of them.
        let remove = prod.schedule_request_name(SCHEDULE_REMOVE, &PRINCIPAL, &ROLE, &s, start);
        assert!(!prod.owns_schedule(&remove, &PRINCIPAL, &ROLE, &s, Some(start), Some(end)));
    }

    #[test]
    fn role_assignment_names_depend_on_every_input() {
        let prod = owner("prod");
        let base = prod.role_assignment_name(&PRINCIPAL, &ROLE, &scope(SCOPE));
        let other = Uuid::from_u128(1);
        assert_ne!(
            prod.role_assignment_name(&other, &ROLE, &scope(SCOPE)),
            base
        );
        assert_ne!(
            prod.role_assignment_name(&PRINCIPAL, &other, &scope(SCOPE)),
            base
        );
        assert_ne!(
            prod.role_assignment_name(&PRINCIPAL, &ROLE, &scope(&format!("{SCOPE}x"))),
            base
        );
        // Principal and role are not interchangeable.
        assert_ne!(
            prod.role_assignment_name(&ROLE, &PRINCIPAL, &scope(SCOPE)),
            base
        );
    }

    #[test]
    fn ownership_is_the_derived_name_never_the_description() {
        let prod = owner("prod");
        let s = scope(SCOPE);
        let name = prod.role_assignment_name(&PRINCIPAL, &ROLE, &s);
        assert!(prod.owns_role_assignment(&name, &PRINCIPAL, &ROLE, &s));
        // Our name on another tuple (Azure keeps a name's tuple; someone else made it first).
        assert!(!prod.owns_role_assignment(&name, &ROLE, &PRINCIPAL, &s));
        // Another name on our tuple: standing access, whatever its description says.
        assert!(!prod.owns_role_assignment(&Uuid::from_u128(9), &PRINCIPAL, &ROLE, &s));
        // FICs: the name and this operator's issuer.
        let fic = prod.fic_name(MI, SUBJECT);
        assert!(prod.owns_fic(&fic, MI, ISSUER, SUBJECT, ISSUER));
        assert!(!prod.owns_fic(&fic, MI, "https://other.example", SUBJECT, ISSUER));
        assert!(!prod.owns_fic(&fic, MI, ISSUER, "system:serviceaccount:x:y", ISSUER));
        assert!(!prod.owns_fic("my-credential", MI, ISSUER, SUBJECT, ISSUER));
    }

    #[test]
    fn twins_are_recognised_by_marker_or_fic_name() {
        let prod = owner("prod");
        let twin = Owner::new("prod", "6b3c6f0e-8a41-4d0c-9a7e-2f6f1c0d9e11", None).unwrap();
        let their_fic = twin.fic_name(MI, SUBJECT);
        assert!(prod.is_twin(None, Some(&their_fic)));
        assert!(prod.is_twin(Some("lapse:prod owner=x grant=a/b"), None));
        assert!(!prod.is_twin(Some("lapse:prod2"), None));
        assert!(!prod.is_twin(Some("made by hand"), Some("my-credential")));
        assert!(!prod.is_twin(None, Some(&owner("dev").fic_name(MI, SUBJECT))));
    }

    #[test]
    fn owners_are_validated_naming_the_part() {
        assert!(matches!(
            Owner::new("Prod", CLUSTER_ID, None),
            Err(NamingError::InvalidClusterName { .. })
        ));
        for bad in ["", "a b", "a|b", &"a".repeat(65)] {
            assert!(
                matches!(
                    Owner::new("prod", bad, None),
                    Err(NamingError::InvalidClusterId { .. })
                ),
                "{bad:?}"
            );
        }
        for bad in ["", "EU", "eu_1", "-eu"] {
            let e = Owner::new("prod", CLUSTER_ID, Some(bad)).unwrap_err();
            assert!(
                matches!(e, NamingError::InvalidShard { .. }),
                "{bad:?}: {e}"
            );
            assert!(e.to_string().starts_with("shard `"), "{e}");
        }
        assert_eq!(
            Owner::new("prod", CLUSTER_ID, Some("eu")).unwrap().id(),
            format!("{CLUSTER_ID}/eu")
        );
    }

    #[test]
    fn cluster_names_follow_dns_1123() {
        for ok in ["a", "0", "prod", "dev-2", "a-b-c", &"a".repeat(63)] {
            assert_eq!(validate_cluster_name(ok), Ok(()), "{ok}");
        }
        for (bad, needle) in [
            ("", "empty"),
            (&*"a".repeat(64), "maximum is 63"),
            ("Prod", "`P` is not allowed"),
            ("dev_2", "`_` is not allowed"),
            ("dev.2", "`.` is not allowed"),
            ("dev 2", "` ` is not allowed"),
            ("dev|2", "`|` is not allowed"),
            ("dév", "is not allowed"),
            ("-dev", "start and end"),
            ("dev-", "start and end"),
        ] {
            match validate_cluster_name(bad) {
                Err(NamingError::InvalidClusterName { name, reason }) => {
                    assert_eq!(name, bad);
                    assert!(reason.contains(needle), "{bad}: {reason}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn fic_names_identify_their_cluster() {
        let dev = owner("dev");
        let name = dev.fic_name(MI, SUBJECT);
        assert_eq!(fic_cluster(&name), Some("dev"));
        let dashed = owner("dev-2-eu").fic_name(MI, SUBJECT);
        assert_eq!(fic_cluster(&dashed), Some("dev-2-eu"));
        assert_ne!(
            name,
            dev.fic_name(MI, "system:serviceaccount:payments:other")
        );
        assert_ne!(
            name,
            dev.fic_name(&MI.replace("backup", "restore"), SUBJECT)
        );
        assert_ne!(name, owner("dev2").fic_name(MI, SUBJECT));
    }

    #[test]
    fn fic_cluster_refuses_look_alikes() {
        let hex = "0123456789abcdef0123456789abcdef";
        for name in [
            "my-credential".to_owned(),
            format!("lapse-{hex}"),
            format!("lapse--{hex}"),
            format!("lapse-dev-{}", hex.to_uppercase()),
            format!("lapse-dev-{}", &hex[1..]),
            format!("lapse-dev-{hex}0"),
            format!("lapse-dev-{}g", &hex[1..]),
            format!("lapse-dev_{hex}"),
            format!("Lapse-dev-{hex}"),
            format!("lapse-Dev-{hex}"),
            format!("lapse-dev--{hex}"),
            format!("lapse-{}-{hex}", "a".repeat(64)),
            format!("lapse-dé-{hex}"),
            format!("lapse-d\u{e9}{hex}"),
        ] {
            assert_eq!(fic_cluster(&name), None, "{name}");
        }
        assert_eq!(fic_cluster(&format!("lapse-dev-{hex}")), Some("dev"));
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn marker_description_format() {
        let m = Marker {
            cluster: "prod".into(),
            owner: Some(format!("{CLUSTER_ID}/eu")),
            grant: Some("payments/nightly-backup".into()),
            expires_at: Some(at("2026-12-01T04:00:00Z")),
        };
        assert_eq!(
            m.to_description(),
            format!(
                "lapse:prod owner={CLUSTER_ID}/eu grant=payments/nightly-backup expires=2026-12-01T04:00:00Z"
            )
        );
        let bare = Marker {
            cluster: "prod".into(),
            owner: None,
            grant: None,
            expires_at: None,
        };
        assert_eq!(bare.to_description(), "lapse:prod");
        assert_eq!(Marker::parse("lapse:prod"), Some(bare));
        assert_eq!(Marker::parse(&m.to_description()), Some(m));
    }

    #[test]
    fn marker_parse_is_lenient_after_the_marker() {
        let m = Marker::parse("lapse:prod future=1 grant=a/b expires=yesterday grant=c/d").unwrap();
        assert_eq!(m.cluster, "prod");
        assert_eq!(m.grant.as_deref(), Some("a/b"));
        assert_eq!(m.expires_at, None);
        let offset = Marker::parse("lapse:prod expires=2026-12-01T06:00:00+02:00").unwrap();
        assert_eq!(offset.expires_at, Some(at("2026-12-01T04:00:00Z")));
        for not_marker in [
            "lapse:Prod",
            "Lapse:prod",
            " lapse:prod",
            "lapse: prod",
            "lapse-prod",
            "",
        ] {
            assert_eq!(Marker::parse(not_marker), None, "{not_marker:?}");
        }
    }

    #[test]
    fn long_grants_are_truncated_never_the_marker() {
        let expires = at("2026-12-01T04:00:00.123456789Z");
        let m = Marker {
            cluster: "a".repeat(63),
            owner: Some(format!("{CLUSTER_ID}/{}", "b".repeat(63))),
            grant: Some(format!("ns/{}", "é".repeat(2000))),
            expires_at: Some(expires),
        };
        let d = m.to_description();
        assert!(d.len() <= MAX_DESCRIPTION_LEN, "{}", d.len());
        assert!(d.starts_with(&format!(
            "lapse:{} owner={CLUSTER_ID}/{} grant=ns/é",
            "a".repeat(63),
            "b".repeat(63)
        )));
        assert!(
            d.ends_with("... expires=2026-12-01T04:00:00.123456789Z"),
            "{d}"
        );
        let back = Marker::parse(&d).unwrap();
        assert_eq!(back.expires_at, Some(expires));
        assert_eq!(back.cluster, m.cluster);
        assert_eq!(back.owner, m.owner);
    }

    #[test]
    fn whitespace_in_grants_cannot_forge_fields() {
        let m = Marker {
            cluster: "prod".into(),
            owner: None,
            grant: Some("ns/x expires=2000-01-01T00:00:00Z".into()),
            expires_at: None,
        };
        let d = m.to_description();
        assert_eq!(d, "lapse:prod grant=ns/x_expires=2000-01-01T00:00:00Z");
        assert_eq!(Marker::parse(&d).unwrap().expires_at, None);
        let forged_owner = Marker {
            owner: Some("x grant=a/b".into()),
            ..m
        };
        assert!(!forged_owner.to_description().contains("owner="));
    }

    fn cluster() -> impl Strategy<Value = String> {
        "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
    }

    fn cluster_id() -> impl Strategy<Value = String> {
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    }

    fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
        // 1970..9999: RFC 3339 has four-digit years.
        (0i64..253_402_300_799, 0u32..1_000_000_000)
            .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn fic_names_match_azure_and_invert(
            c in cluster(),
            id in cluster_id(),
            identity in "\\PC{0,80}",
            subject in "\\PC{0,80}",
        ) {
            let re = regex::Regex::new(FIC_PATTERN).unwrap();
            let o = Owner::new(&c, &id, None).unwrap();
            let name = o.fic_name(&identity, &subject);
            prop_assert!(re.is_match(&name), "{}", name);
            prop_assert_eq!(fic_cluster(&name), Some(c.as_str()));
            prop_assert_eq!(&name, &o.fic_name(&identity, &subject));
            prop_assert!(o.owns_fic(&name, &identity, ISSUER, &subject, ISSUER));
        }

        #[test]
        fn fic_names_change_with_any_input(
            c in "[a-z0-9]([-a-z0-9]{0,58}[a-z0-9])?", id in cluster_id(), identity in "[a-z/]{1,20}", subject in "[a-z:]{1,20}",
            which in 0..3usize, extra in "[a-z0-9]",
        ) {
            let o = Owner::new(&c, &id, None).unwrap();
            let base = o.fic_name(&identity, &subject);
            let changed = match which {
                0 => Owner::new(&format!("{c}{extra}"), &id, None).unwrap().fic_name(&identity, &subject),
                1 => o.fic_name(&format!("{identity}{extra}"), &subject),
                _ => o.fic_name(&identity, &format!("{subject}{extra}")),
            };
            prop_assert_ne!(base, changed);
        }

        #[test]
        fn role_assignment_names_are_deterministic_and_sensitive(
            c in "[a-z0-9]([-a-z0-9]{0,58}[a-z0-9])?", id in cluster_id(), p in any::<u128>(), r in any::<u128>(), q in any::<u128>(),
            rg in "[a-zA-Z0-9-]{1,20}", which in 0..5usize,
        ) {
            let o = Owner::new(&c, &id, None).unwrap();
            let (p, r) = (Uuid::from_u128(p), Uuid::from_u128(r));
            let s = scope(&format!("/subscriptions/s/resourceGroups/{rg}"));
            let base = o.role_assignment_name(&p, &r, &s);
            prop_assert_eq!(base, o.role_assignment_name(&p, &r, &s));
            prop_assert!(o.owns_role_assignment(&base, &p, &r, &s));
            let spelled = scope(&format!("/SUBSCRIPTIONS/S/resourcegroups/{}/", rg.to_uppercase()));
            prop_assert_eq!(base, o.role_assignment_name(&p, &r, &spelled));
            let q = Uuid::from_u128(q);
            let changed = match which {
                0 => Owner::new(&format!("{c}x"), &id, None).unwrap().role_assignment_name(&p, &r, &s),
                1 if q != p => o.role_assignment_name(&q, &r, &s),
                2 if q != r => o.role_assignment_name(&p, &q, &s),
                3 => o.role_assignment_name(&p, &r, &scope(&format!("/subscriptions/s/resourceGroups/{rg}x"))),
                4 => Owner::new(&c, &id, Some("x")).unwrap().role_assignment_name(&p, &r, &s),
                _ => return Ok(()),
            };
            prop_assert_ne!(base, changed);
        }

        #[test]
        fn cluster_validation_matches_the_dns_label_regex(s in "[a-z0-9A-Z_.-]{0,66}") {
            let re = regex::Regex::new(CLUSTER_PATTERN).unwrap();
            prop_assert_eq!(validate_cluster_name(&s).is_ok(), re.is_match(&s));
        }

        #[test]
        fn markers_round_trip(
            c in cluster(),
            owner in proptest::option::of(cluster_id()),
            grant in proptest::option::of("[a-z0-9][-a-z0-9]{0,62}/[a-z0-9][-a-z0-9.]{0,252}"),
            expires in proptest::option::of(timestamp()),
        ) {
            let m = Marker { cluster: c.clone(), owner, grant, expires_at: expires };
            let d = m.to_description();
            prop_assert!(d.len() <= MAX_DESCRIPTION_LEN);
            prop_assert_eq!(Marker::parse(&d), Some(m));
        }
    }
}
