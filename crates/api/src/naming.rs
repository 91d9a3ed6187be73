//! Deterministic names for the Azure objects lapse creates, and the ownership marker.
//!
//! Names are derived, never random, so a restarted operator finds what it created before and a
//! retried PUT lands on the same object. The cluster name is part of every seed so two clusters
//! sharing a subscription never clash. These derivations are a compatibility contract: changing
//! any of them orphans every object created by an earlier version.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::arm::ArmId;

/// The UUIDv5 namespace of every lapse name. Never change it.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x532dc5bd_1d8c_400b_abb7_b7b6803d366f);

/// Longest cluster name: a DNS-1123 label.
pub const MAX_CLUSTER_NAME_LEN: usize = 63;
/// Longest description lapse writes on a role assignment.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

const MARKER_PREFIX: &str = "lapse:";
const FIC_PREFIX: &str = "lapse-";
/// `-` and 32 lowercase hex digits.
const FIC_SUFFIX_LEN: usize = 33;

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum NamingError {
    #[error("cluster name `{name}` is invalid: {reason}")]
    InvalidClusterName { name: String, reason: String },
}

/// The role assignment name for (cluster, principal, role definition, scope): UUIDv5 of
/// `cluster|principal|role|scope key`. `cluster` must pass [`validate_cluster_name`] (it has no
/// `|`, which keeps the seed unambiguous).
pub fn role_assignment_name(
    cluster: &str,
    principal_id: &Uuid,
    role_guid: &Uuid,
    scope: &ArmId,
) -> Uuid {
    // Uuid's Display is lowercase and hyphenated.
    let seed = format!("{cluster}|{principal_id}|{role_guid}|{}", scope.key());
    Uuid::new_v5(&NAMESPACE, seed.as_bytes())
}

/// The federated identity credential name for (cluster, identity, subject):
/// `lapse-<cluster>-<32 hex>`, at most 102 characters, matching Azure's
/// `^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$` for every valid cluster name. Managed identity FICs have
/// no description, so this name is also their ownership marker (see [`fic_cluster`]).
pub fn fic_name(cluster: &str, identity_key: &str, subject: &str) -> String {
    let seed = format!("{cluster}|{identity_key}|{subject}");
    format!(
        "{FIC_PREFIX}{cluster}-{}",
        Uuid::new_v5(&NAMESPACE, seed.as_bytes()).simple()
    )
}

/// The cluster a FIC name produced by [`fic_name`] belongs to, or `None` if it is not a lapse
/// name.
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

/// The ownership marker and detail lapse writes into a role assignment's description:
/// `lapse:<cluster> grant=<namespace>/<name> expires=<RFC 3339>`, the last two optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub cluster: String,
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
            grant: None,
            expires_at: None,
        };
        for field in fields.split(' ') {
            // The first occurrence of a field wins.
            if let Some(grant) = field.strip_prefix("grant=") {
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

/// True only if `description` carries `cluster`'s marker: `lapse:<cluster>` then the end or a
/// space. The marker alone decides ownership; nothing else in the description is trusted.
pub fn is_owned_by(description: Option<&str>, cluster: &str) -> bool {
    validate_cluster_name(cluster).is_ok()
        && description
            .and_then(|d| d.strip_prefix(MARKER_PREFIX))
            .and_then(|d| d.strip_prefix(cluster))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRINCIPAL: Uuid = Uuid::from_u128(0x0f0e0d0c_0b0a_4908_8706_050403020100);
    const ROLE: Uuid = Uuid::from_u128(0xacdd72a7_3385_48ef_bd42_f606fba81ae7);
    const SCOPE: &str =
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Payments-RG";
    const MI: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/payments-rg/providers/microsoft.managedidentity/userassignedidentities/backup";
    const SUBJECT: &str = "system:serviceaccount:payments:backup-runner";
    const FIC_PATTERN: &str = "^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$";
    const CLUSTER_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

    fn scope(s: &str) -> ArmId {
        ArmId::parse(s).unwrap()
    }

    #[test]
    fn names_are_pinned_across_versions() {
        // Computed independently (Python uuid.uuid5). Changing them orphans every object an
        // earlier release created.
        assert_eq!(
            role_assignment_name("prod", &PRINCIPAL, &ROLE, &scope(SCOPE)).to_string(),
            "dafce5a6-194c-5200-b3c8-ffd69b70a639"
        );
        assert_eq!(
            fic_name("prod", MI, SUBJECT),
            "lapse-prod-79b9d0196c5352bf826856e8bc63d474"
        );
    }

    #[test]
    fn role_assignment_names_ignore_scope_spelling() {
        let name = role_assignment_name("prod", &PRINCIPAL, &ROLE, &scope(SCOPE));
        for variant in [
            format!("{SCOPE}/"),
            SCOPE.to_uppercase(),
            SCOPE.to_lowercase(),
            "/Subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/payments-rg/"
                .to_owned(),
        ] {
            assert_eq!(
                role_assignment_name("prod", &PRINCIPAL, &ROLE, &scope(&variant)),
                name,
                "{variant}"
            );
        }
        assert_eq!(name.get_version_num(), 5);
    }

    #[test]
    fn role_assignment_names_depend_on_every_input() {
        let base = role_assignment_name("prod", &PRINCIPAL, &ROLE, &scope(SCOPE));
        let other = Uuid::from_u128(1);
        assert_ne!(
            role_assignment_name("prod2", &PRINCIPAL, &ROLE, &scope(SCOPE)),
            base
        );
        assert_ne!(
            role_assignment_name("prod", &other, &ROLE, &scope(SCOPE)),
            base
        );
        assert_ne!(
            role_assignment_name("prod", &PRINCIPAL, &other, &scope(SCOPE)),
            base
        );
        assert_ne!(
            role_assignment_name("prod", &PRINCIPAL, &ROLE, &scope(&format!("{SCOPE}x"))),
            base
        );
        // Principal and role are not interchangeable.
        assert_ne!(
            role_assignment_name("prod", &ROLE, &PRINCIPAL, &scope(SCOPE)),
            base
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
                Ok(()) => panic!("{bad:?} accepted"),
            }
        }
    }

    #[test]
    fn fic_names_identify_their_cluster() {
        let name = fic_name("dev", MI, SUBJECT);
        assert_eq!(fic_cluster(&name), Some("dev"));
        let dashed = fic_name("dev-2-eu", MI, SUBJECT);
        assert_eq!(fic_cluster(&dashed), Some("dev-2-eu"));
        assert_ne!(
            name,
            fic_name("dev", MI, "system:serviceaccount:payments:other")
        );
        assert_ne!(
            name,
            fic_name("dev", &MI.replace("backup", "restore"), SUBJECT)
        );
        assert_ne!(name, fic_name("dev2", MI, SUBJECT));
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
            grant: Some("payments/nightly-backup".into()),
            expires_at: Some(at("2026-12-01T04:00:00Z")),
        };
        assert_eq!(
            m.to_description(),
            "lapse:prod grant=payments/nightly-backup expires=2026-12-01T04:00:00Z"
        );
        let bare = Marker {
            cluster: "prod".into(),
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
    }

    #[test]
    fn long_grants_are_truncated_never_the_marker() {
        let expires = at("2026-12-01T04:00:00.123456789Z");
        let m = Marker {
            cluster: "a".repeat(63),
            grant: Some(format!("ns/{}", "é".repeat(2000))),
            expires_at: Some(expires),
        };
        let d = m.to_description();
        assert!(d.len() <= MAX_DESCRIPTION_LEN, "{}", d.len());
        assert!(d.starts_with(&format!("lapse:{} grant=ns/é", "a".repeat(63))));
        assert!(
            d.ends_with("... expires=2026-12-01T04:00:00.123456789Z"),
            "{d}"
        );
        assert!(is_owned_by(Some(&d), &"a".repeat(63)));
        let back = Marker::parse(&d).unwrap();
        assert_eq!(back.expires_at, Some(expires));
        assert_eq!(back.cluster, m.cluster);
    }

    #[test]
    fn whitespace_in_grants_cannot_forge_fields() {
        let m = Marker {
            cluster: "prod".into(),
            grant: Some("ns/x expires=2000-01-01T00:00:00Z".into()),
            expires_at: None,
        };
        let d = m.to_description();
        assert_eq!(d, "lapse:prod grant=ns/x_expires=2000-01-01T00:00:00Z");
        assert_eq!(Marker::parse(&d).unwrap().expires_at, None);
    }

    #[test]
    fn ownership_refuses_look_alikes() {
        let owned = [
            "lapse:dev",
            "lapse:dev grant=a/b",
            "lapse:dev expires=x",
            "lapse:dev ",
        ];
        for d in owned {
            assert!(is_owned_by(Some(d), "dev"), "{d}");
        }
        let not_owned = [
            "lapse:dev2",
            "lapse:dev2 grant=a/b",
            "lapse:dev-x",
            "lapse:de",
            "lapse:DEV",
            "Lapse:dev",
            "LAPSE:dev",
            " lapse:dev",
            "lapse: dev",
            "lapse:dev\tgrant=a/b",
            "lapse:dev/grant",
            "lapse-dev",
            "xlapse:dev",
            "created by lapse:dev",
            "",
        ];
        for d in not_owned {
            assert!(!is_owned_by(Some(d), "dev"), "{d:?}");
        }
        assert!(!is_owned_by(None, "dev"));
        // An invalid cluster name owns nothing, not even a bare prefix.
        assert!(!is_owned_by(Some("lapse:"), ""));
        assert!(!is_owned_by(Some("lapse: x"), ""));
        assert!(!is_owned_by(Some("lapse:Dev"), "Dev"));
    }

    fn cluster() -> impl Strategy<Value = String> {
        "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
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
            identity in "\\PC{0,80}",
            subject in "\\PC{0,80}",
        ) {
            let re = regex::Regex::new(FIC_PATTERN).unwrap();
            let name = fic_name(&c, &identity, &subject);
            prop_assert!(re.is_match(&name), "{}", name);
            prop_assert_eq!(fic_cluster(&name), Some(c.as_str()));
            prop_assert_eq!(name, fic_name(&c, &identity, &subject));
        }

        #[test]
        fn fic_names_change_with_any_input(
            c in cluster(), identity in "[a-z/]{1,20}", subject in "[a-z:]{1,20}",
            which in 0..3usize, extra in "[a-z0-9]",
        ) {
            let base = fic_name(&c, &identity, &subject);
            let changed = match which {
                0 => fic_name(&format!("{c}{extra}"), &identity, &subject),
                1 => fic_name(&c, &format!("{identity}{extra}"), &subject),
                _ => fic_name(&c, &identity, &format!("{subject}{extra}")),
            };
            prop_assert_ne!(base, changed);
        }

        #[test]
        fn role_assignment_names_are_deterministic_and_sensitive(
            c in cluster(), p in any::<u128>(), r in any::<u128>(), q in any::<u128>(),
            rg in "[a-zA-Z0-9-]{1,20}", which in 0..4usize,
        ) {
            let (p, r) = (Uuid::from_u128(p), Uuid::from_u128(r));
            let s = scope(&format!("/subscriptions/s/resourceGroups/{rg}"));
            let base = role_assignment_name(&c, &p, &r, &s);
            prop_assert_eq!(base, role_assignment_name(&c, &p, &r, &s));
            let spelled = scope(&format!("/SUBSCRIPTIONS/S/resourcegroups/{}/", rg.to_uppercase()));
            prop_assert_eq!(base, role_assignment_name(&c, &p, &r, &spelled));
            let q = Uuid::from_u128(q);
            let changed = match which {
                0 => role_assignment_name(&format!("{c}x"), &p, &r, &s),
                1 if q != p => role_assignment_name(&c, &q, &r, &s),
                2 if q != r => role_assignment_name(&c, &p, &q, &s),
                3 => role_assignment_name(&c, &p, &r, &scope(&format!("/subscriptions/s/resourceGroups/{rg}x"))),
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
            grant in proptest::option::of("[a-z0-9][-a-z0-9]{0,62}/[a-z0-9][-a-z0-9.]{0,252}"),
            expires in proptest::option::of(timestamp()),
        ) {
            let m = Marker { cluster: c.clone(), grant, expires_at: expires };
            let d = m.to_description();
            prop_assert!(d.len() <= MAX_DESCRIPTION_LEN);
            prop_assert!(is_owned_by(Some(&d), &c));
            prop_assert_eq!(Marker::parse(&d), Some(m));
        }

        #[test]
        fn ownership_agrees_with_marker_parsing(
            c in cluster(),
            other in cluster(),
            tail in prop_oneof![Just(String::new()), Just(" grant=a/b".to_owned()), "[ -~]{0,12}"],
        ) {
            let d = format!("lapse:{other}{tail}");
            let parsed_cluster = Marker::parse(&d).map(|m| m.cluster);
            prop_assert_eq!(is_owned_by(Some(&d), &c), parsed_cluster.as_deref() == Some(c.as_str()));
        }
    }
}
