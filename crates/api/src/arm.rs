//! ARM resource IDs and role-assignment scopes.
//!
//! ARM compares IDs case-insensitively, so every comparison here goes through a lowercase key.
//! Anything ambiguous (doubled slashes, `.`/`..`, control or non-ASCII characters) is refused,
//! never repaired: a policy scope and a grant scope must mean exactly what they say.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest ARM ID accepted, after the trailing slash is dropped.
pub const MAX_ARM_ID_LEN: usize = crate::v1alpha1::MAX_ARM_ID_LEN as usize;

/// A parsed ARM resource ID: `/subscriptions/<s>`, `/subscriptions/<s>/resourceGroups/<g>`,
/// followed by any number of `providers/<namespace>(/<type>/<name>)+` parts (several parts make an
/// extension resource), or a tenant-level `/providers/...` ID such as a management group.
///
/// Equality, ordering and hashing use the lowercase [`ArmId::key`].
#[derive(Clone, Debug)]
pub struct ArmId {
    /// As written, minus one trailing slash.
    raw: String,
    /// `raw` lowercased: ARM IDs are case-insensitive.
    key: String,
    layout: Layout,
}

/// Where the structural parts sit, as indices into the segments after the leading `/`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    subscription: bool,
    resource_group: bool,
    /// Index of the last `providers` keyword.
    last_provider: Option<usize>,
    provider_parts: usize,
}

/// Why a string is not an ARM ID. Positions are 0-based byte offsets into the input.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ArmIdError {
    #[error("ARM ID is empty")]
    Empty,
    #[error("ARM ID must start with `/`")]
    NoLeadingSlash,
    #[error("ARM ID has an empty segment at byte {position} (a doubled slash)")]
    EmptySegment { position: usize },
    #[error("ARM ID has a `{segment}` segment; relative segments are not allowed")]
    DotSegment { segment: String },
    #[error("ARM ID has a control character at byte {position}")]
    ControlCharacter { position: usize },
    #[error("ARM ID has a non-ASCII character at byte {position}")]
    NonAscii { position: usize },
    #[error("ARM ID is {len} characters long; the maximum is {max}")]
    TooLong { len: usize, max: usize },
    #[error("ARM ID is malformed: {reason}")]
    Malformed { reason: String },
}

impl ArmId {
    pub fn parse(s: &str) -> Result<ArmId, ArmIdError> {
        if s.is_empty() {
            return Err(ArmIdError::Empty);
        }
        if !s.starts_with('/') {
            return Err(ArmIdError::NoLeadingSlash);
        }
        if let Some((position, c)) = s
            .char_indices()
            .find(|(_, c)| !c.is_ascii() || c.is_control())
        {
            return Err(if c.is_control() {
                ArmIdError::ControlCharacter { position }
            } else {
                ArmIdError::NonAscii { position }
            });
        }
        let raw = s.strip_suffix('/').unwrap_or(s);
        if raw.len() > MAX_ARM_ID_LEN {
            return Err(ArmIdError::TooLong {
                len: raw.len(),
                max: MAX_ARM_ID_LEN,
            });
        }
        if raw.is_empty() {
            return Err(malformed("`/` alone is not a resource ID"));
        }
        let mut segments = Vec::new();
        let mut position = 1;
        for segment in raw[1..].split('/') {
            if segment.is_empty() {
                return Err(ArmIdError::EmptySegment { position });
            }
            if is_dot_segment(segment) {
                return Err(ArmIdError::DotSegment {
                    segment: segment.to_owned(),
                });
            }
            segments.push(segment);
            position += segment.len() + 1;
        }
        let layout = Layout::of(&segments)?;
        Ok(ArmId {
            raw: raw.to_owned(),
            key: raw.to_ascii_lowercase(),
            layout,
        })
    }

    /// The ID as written, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The lowercase form: the identity of the ID for comparison, hashing and derived names.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// True if `self` is `ancestor` or lies under it, by whole segments and ignoring case.
    pub fn is_at_or_below(&self, ancestor: &ArmId) -> bool {
        match self.key.strip_prefix(ancestor.key.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    pub fn subscription(&self) -> Option<&str> {
        self.layout.subscription.then(|| self.segment(1)).flatten()
    }

    pub fn resource_group(&self) -> Option<&str> {
        self.layout
            .resource_group
            .then(|| self.segment(3))
            .flatten()
    }

    /// The namespace of the last `providers/<namespace>` part, e.g. `Microsoft.Storage`.
    pub fn provider(&self) -> Option<&str> {
        self.segment(self.layout.last_provider? + 1)
    }

    /// The full type of the resource the ID names, from its last provider part, e.g.
    /// `Microsoft.Storage/storageAccounts/blobServices`. `None` for subscriptions and resource
    /// groups.
    pub fn resource_type(&self) -> Option<String> {
        let start = self.layout.last_provider?;
        let mut parts = self.segments().skip(start + 1);
        let mut out = parts.next()?.to_owned();
        for ty in parts.step_by(2) {
            out.push('/');
            out.push_str(ty);
        }
        Some(out)
    }

    /// The last name in the ID: the resource's name, else the resource group's, else the
    /// subscription ID (every well-formed ID ends with a name).
    pub fn name(&self) -> Option<&str> {
        self.segments().last()
    }

    /// `/subscriptions/<s>/resourceGroups/<g>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>`
    pub fn is_managed_identity(&self) -> bool {
        let l = self.layout;
        l.subscription
            && l.resource_group
            && l.provider_parts == 1
            && self.segment_count() == 8
            && self.segment_is(5, "Microsoft.ManagedIdentity")
            && self.segment_is(6, "userAssignedIdentities")
    }

    /// True for the scopes a role can be assigned at: a subscription, a resource group, a
    /// resource in a resource group, or a management group.
    pub fn is_scope(&self) -> bool {
        let l = self.layout;
        if l.subscription {
            // Subscription-level resources (`/subscriptions/<s>/providers/...`) are not scopes.
            return l.resource_group || l.provider_parts == 0;
        }
        self.segment_count() == 4
            && self.segment_is(1, "Microsoft.Management")
            && self.segment_is(2, "managementGroups")
    }

    fn segments(&self) -> impl Iterator<Item = &str> {
        self.raw[1..].split('/')
    }

    fn segment(&self, index: usize) -> Option<&str> {
        self.segments().nth(index)
    }

    fn segment_count(&self) -> usize {
        self.segments().count()
    }

    fn segment_is(&self, index: usize, expected: &str) -> bool {
        self.segment(index)
            .is_some_and(|s| s.eq_ignore_ascii_case(expected))
    }
}

fn malformed(reason: impl Into<String>) -> ArmIdError {
    ArmIdError::Malformed {
        reason: reason.into(),
    }
}

/// `.` and `..`, also percent-encoded: a server that decodes the path would resolve them.
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

impl Layout {
    fn of(segments: &[&str]) -> Result<Layout, ArmIdError> {
        let is = |i: usize, keyword: &str| {
            segments
                .get(i)
                .is_some_and(|s| s.eq_ignore_ascii_case(keyword))
        };
        let n = segments.len();
        let mut layout = Layout {
            subscription: false,
            resource_group: false,
            last_provider: None,
            provider_parts: 0,
        };
        let mut i = 0;
        if is(0, "subscriptions") {
            if n < 2 {
                return Err(malformed("`subscriptions` must be followed by an ID"));
            }
            layout.subscription = true;
            i = 2;
            if is(2, "resourceGroups") {
                if n < 4 {
                    return Err(malformed("`resourceGroups` must be followed by a name"));
                }
                layout.resource_group = true;
                i = 4;
            }
        } else if is(0, "resourceGroups") {
            return Err(malformed(
                "`resourceGroups` must follow `/subscriptions/<id>`",
            ));
        }
        while i < n {
            if !is(i, "providers") {
                return Err(malformed(format!(
                    "expected `providers` but found `{}` (segment {})",
                    segments[i],
                    i + 1
                )));
            }
            let Some(namespace) = segments.get(i + 1) else {
                return Err(malformed("`providers` must be followed by a namespace"));
            };
            layout.last_provider = Some(i);
            layout.provider_parts += 1;
            i += 2;
            let mut pairs = 0;
            while i < n && !is(i, "providers") {
                if i + 1 >= n {
                    return Err(malformed(format!(
                        "resource type `{}` has no name",
                        segments[i]
                    )));
                }
                pairs += 1;
                i += 2;
            }
            if pairs == 0 {
                return Err(malformed(format!(
                    "`providers/{namespace}` must be followed by a resource type and name"
                )));
            }
        }
        Ok(layout)
    }
}

impl PartialEq for ArmId {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ArmId {}

impl Hash for ArmId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialOrd for ArmId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ArmId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for ArmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for ArmId {
    type Err = ArmIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ArmId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for ArmId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;

    const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";
    const RG: &str =
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg";
    const ACCT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg/providers/Microsoft.Storage/storageAccounts/acct";
    const MI: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup";
    const MG: &str = "/providers/Microsoft.Management/managementGroups/platform";

    fn id(s: &str) -> ArmId {
        ArmId::parse(s).unwrap()
    }

    fn hash(x: &ArmId) -> u64 {
        let mut h = DefaultHasher::new();
        x.hash(&mut h);
        h.finish()
    }

    #[test]
    fn parses_common_shapes() {
        for s in [SUB, RG, ACCT, MI, MG] {
            assert_eq!(id(s).as_str(), s);
        }
        let container = id(&format!("{ACCT}/blobServices/default/containers/backups"));
        assert_eq!(container.provider(), Some("Microsoft.Storage"));
        assert_eq!(
            container.resource_type().as_deref(),
            Some("Microsoft.Storage/storageAccounts/blobServices/containers")
        );
        assert_eq!(container.name(), Some("backups"));
        assert_eq!(
            container.subscription(),
            Some("00000000-0000-0000-0000-000000000001")
        );
        assert_eq!(container.resource_group(), Some("payments-rg"));
    }

    #[test]
    fn accessors_on_subscription_and_group() {
        let sub = id(SUB);
        assert_eq!(
            sub.subscription(),
            Some("00000000-0000-0000-0000-000000000001")
        );
        assert_eq!(sub.resource_group(), None);
        assert_eq!(sub.provider(), None);
        assert_eq!(sub.resource_type(), None);
        assert_eq!(sub.name(), Some("00000000-0000-0000-0000-000000000001"));
        let rg = id(RG);
        assert_eq!(rg.resource_group(), Some("payments-rg"));
        assert_eq!(rg.provider(), None);
        assert_eq!(rg.name(), Some("payments-rg"));
        let mg = id(MG);
        assert_eq!(mg.subscription(), None);
        assert_eq!(mg.provider(), Some("Microsoft.Management"));
        assert_eq!(
            mg.resource_type().as_deref(),
            Some("Microsoft.Management/managementGroups")
        );
        assert_eq!(mg.name(), Some("platform"));
    }

    #[test]
    fn extension_resources_use_the_last_provider() {
        let ra = id(&format!(
            "{ACCT}/providers/Microsoft.Authorization/roleAssignments/1f8e4d0a-0000-0000-0000-000000000000"
        ));
        assert_eq!(ra.provider(), Some("Microsoft.Authorization"));
        assert_eq!(
            ra.resource_type().as_deref(),
            Some("Microsoft.Authorization/roleAssignments")
        );
        assert_eq!(ra.name(), Some("1f8e4d0a-0000-0000-0000-000000000000"));
        assert_eq!(ra.resource_group(), Some("payments-rg"));
        assert!(ra.is_at_or_below(&id(ACCT)));
        assert!(!ra.is_managed_identity());
        // A resource may be named `providers`.
        let odd = id(&format!("{RG}/providers/A.B/things/providers"));
        assert_eq!(odd.name(), Some("providers"));
        assert_eq!(odd.resource_type().as_deref(), Some("A.B/things"));
    }

    #[test]
    fn keywords_and_case_are_insensitive() {
        let lower = id(
            "/SUBSCRIPTIONS/ABC/resourcegroups/RG/PROVIDERS/microsoft.managedidentity/USERASSIGNEDIDENTITIES/Backup",
        );
        assert!(lower.is_managed_identity());
        assert_eq!(lower.resource_group(), Some("RG"), "accessors keep case");
        assert_eq!(id(RG), id(&RG.to_uppercase()));
        assert_eq!(hash(&id(RG)), hash(&id(&RG.to_uppercase())));
        assert_eq!(id(RG).key(), RG.to_lowercase());
        assert_eq!(id(RG).cmp(&id(&RG.to_uppercase())), Ordering::Equal);
    }

    #[test]
    fn one_trailing_slash_is_dropped_never_two() {
        assert_eq!(id(&format!("{RG}/")).as_str(), RG);
        assert_eq!(
            ArmId::parse(&format!("{RG}//")),
            Err(ArmIdError::EmptySegment {
                position: RG.len() + 1
            })
        );
    }

    #[test]
    fn rejects_bad_syntax_precisely() {
        use ArmIdError::*;
        let cases: &[(&str, ArmIdError)] = &[
            ("", Empty),
            ("subscriptions/a", NoLeadingSlash),
            (" /subscriptions/a", NoLeadingSlash),
            ("//subscriptions/a", EmptySegment { position: 1 }),
            ("/subscriptions//a", EmptySegment { position: 15 }),
            (
                "/subscriptions/a/./resourceGroups/b",
                DotSegment {
                    segment: ".".into(),
                },
            ),
            (
                "/subscriptions/a/../b",
                DotSegment {
                    segment: "..".into(),
                },
            ),
            (
                "/subscriptions/%2E%2e/x",
                DotSegment {
                    segment: "%2E%2e".into(),
                },
            ),
            ("/subscriptions/a\n", ControlCharacter { position: 16 }),
            ("/subscriptions/a\u{7f}", ControlCharacter { position: 16 }),
            ("/subscriptions/a\u{85}", ControlCharacter { position: 16 }),
            ("/subscriptions/\u{e9}", NonAscii { position: 15 }),
            ("/subscriptions/a\u{200b}", NonAscii { position: 16 }),
        ];
        for (input, expected) in cases {
            assert_eq!(ArmId::parse(input).as_ref(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn rejects_bad_structure_with_a_reason() {
        for (input, needle) in [
            ("/", "alone"),
            ("/subscriptions", "followed by an ID"),
            ("/subscriptions/a/resourceGroups", "followed by a name"),
            ("/resourceGroups/a", "must follow"),
            ("/foo/bar", "found `foo`"),
            ("/subscriptions/a/resourceGroups/b/foo/c", "found `foo`"),
            ("/subscriptions/a/providers", "namespace"),
            (
                "/subscriptions/a/providers/Microsoft.Storage",
                "resource type and name",
            ),
            ("/subscriptions/a/providers/A.B/t", "`t` has no name"),
            (
                "/subscriptions/a/providers/A.B/t/n/providers/C.D",
                "resource type and name",
            ),
        ] {
            match ArmId::parse(input) {
                Err(ArmIdError::Malformed { reason }) => {
                    assert!(reason.contains(needle), "{input}: {reason}")
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn length_limit_applies_after_the_trailing_slash() {
        let pad = |len: usize| format!("{SUB}/resourceGroups/{}", "r".repeat(len - SUB.len() - 16));
        let exact = pad(MAX_ARM_ID_LEN);
        assert_eq!(exact.len(), MAX_ARM_ID_LEN);
        assert!(ArmId::parse(&exact).is_ok());
        assert!(ArmId::parse(&format!("{exact}/")).is_ok());
        assert_eq!(
            ArmId::parse(&pad(MAX_ARM_ID_LEN + 1)),
            Err(ArmIdError::TooLong {
                len: MAX_ARM_ID_LEN + 1,
                max: MAX_ARM_ID_LEN
            })
        );
    }

    #[test]
    fn at_or_below_is_by_whole_segments() {
        let a = id("/subscriptions/a");
        assert!(a.is_at_or_below(&a));
        assert!(id("/subscriptions/a/resourceGroups/x").is_at_or_below(&a));
        assert!(id("/SUBSCRIPTIONS/A/resourceGroups/x/").is_at_or_below(&a));
        assert!(!id("/subscriptions/ab").is_at_or_below(&a));
        assert!(!id("/subscriptions/ab/resourceGroups/x").is_at_or_below(&a));
        assert!(!a.is_at_or_below(&id("/subscriptions/a/resourceGroups/x")));
        assert!(!id(RG).is_at_or_below(&id(&format!("{RG}x"))));
        assert!(id(ACCT).is_at_or_below(&id(RG)));
        assert!(
            !id(ACCT).is_at_or_below(&id(MG)),
            "lexical only: MG membership is not in the ID"
        );
    }

    #[test]
    fn scopes() {
        for s in [SUB, RG, ACCT, MI, MG] {
            assert!(id(s).is_scope(), "{s}");
        }
        for s in [
            "/subscriptions/a/providers/Microsoft.Authorization/roleDefinitions/x",
            "/providers/Microsoft.Authorization/roleDefinitions/x",
            "/providers/Microsoft.Management/managementGroups/x/providers/A.B/c/d",
        ] {
            assert!(!id(s).is_scope(), "{s}");
        }
    }

    #[test]
    fn managed_identities() {
        assert!(id(MI).is_managed_identity());
        assert!(id(&format!("{MI}/")).is_managed_identity());
        for s in [
            ACCT.to_owned(),
            RG.to_owned(),
            format!("{MI}/federatedIdentityCredentials/f"),
            format!("{RG}/providers/Microsoft.ManagedIdentity/identities/x"),
            "/subscriptions/a/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"
                .to_owned(),
            format!("{ACCT}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"),
        ] {
            assert!(!id(&s).is_managed_identity(), "{s}");
        }
    }

    #[test]
    fn serde_round_trips_and_refuses_bad_ids() {
        let x = id(&format!("{RG}/"));
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, format!("\"{RG}\""));
        assert_eq!(serde_json::from_str::<ArmId>(&json).unwrap(), x);
        let err = serde_json::from_str::<ArmId>("\"/subscriptions//a\"").unwrap_err();
        assert!(err.to_string().contains("doubled slash"), "{err}");
        assert_eq!(x.to_string(), RG);
        assert_eq!(RG.parse::<ArmId>().unwrap(), x);
    }

    // ---- property tests ----

    /// Names from a tiny alphabet so that generated IDs often share prefixes or differ only in
    /// case, which is where the interesting relations are.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("A".to_owned()),
            Just("ab".to_owned()),
            Just("b".to_owned()),
            "[A-Za-z0-9_()-][A-Za-z0-9._()-]{0,8}",
        ]
    }

    fn provider_part() -> impl Strategy<Value = String> {
        (
            prop_oneof![
                Just("Microsoft.Storage"),
                Just("microsoft.storage"),
                Just("A.B")
            ],
            prop::collection::vec((prop_oneof![Just("t"), Just("T"), Just("c")], name()), 1..3),
        )
            .prop_map(|(ns, pairs)| {
                let mut s = format!("/providers/{ns}");
                for (t, n) in pairs {
                    s.push_str(&format!("/{t}/{n}"));
                }
                s
            })
    }

    fn valid_id() -> impl Strategy<Value = String> {
        let sub = || name().prop_map(|s| format!("/subscriptions/{s}"));
        prop_oneof![
            sub(),
            (sub(), name()).prop_map(|(s, g)| format!("{s}/resourceGroups/{g}")),
            (sub(), name(), prop::collection::vec(provider_part(), 1..3))
                .prop_map(|(s, g, p)| format!("{s}/resourceGroups/{g}{}", p.concat())),
            name().prop_map(|m| format!("/providers/Microsoft.Management/managementGroups/{m}")),
        ]
        .prop_filter("valid names only", |s| ArmId::parse(s).is_ok())
    }

    fn lower_segments(x: &ArmId) -> Vec<String> {
        x.as_str()[1..].split('/').map(str::to_lowercase).collect()
    }

    fn flip_case(s: &str, mask: u64) -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn normalisation_is_idempotent(s in valid_id(), slash in any::<bool>()) {
            let input = if slash { format!("{s}/") } else { s.clone() };
            let once = ArmId::parse(&input).unwrap();
            prop_assert_eq!(once.as_str(), s.as_str());
            let twice = ArmId::parse(once.as_str()).unwrap();
            prop_assert_eq!(twice.as_str(), once.as_str());
            prop_assert_eq!(twice.key(), once.key());
        }

        #[test]
        fn case_variants_compare_equal(s in valid_id(), mask in any::<u64>()) {
            let a = ArmId::parse(&s).unwrap();
            let b = ArmId::parse(&flip_case(&s, mask)).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(hash(&a), hash(&b));
            prop_assert!(a.is_at_or_below(&b) && b.is_at_or_below(&a));
            prop_assert_eq!(a.is_scope(), b.is_scope());
            prop_assert_eq!(a.is_managed_identity(), b.is_managed_identity());
        }

        #[test]
        fn at_or_below_is_segment_prefix(a in valid_id(), b in valid_id()) {
            let (a, b) = (ArmId::parse(&a).unwrap(), ArmId::parse(&b).unwrap());
            let (sa, sb) = (lower_segments(&a), lower_segments(&b));
            prop_assert_eq!(a.is_at_or_below(&b), sa.starts_with(&sb));
        }

        #[test]
        fn at_or_below_is_a_partial_order(a in valid_id(), b in valid_id(), c in valid_id()) {
            let (a, b, c) = (
                ArmId::parse(&a).unwrap(),
                ArmId::parse(&b).unwrap(),
                ArmId::parse(&c).unwrap(),
            );
            prop_assert!(a.is_at_or_below(&a));
            if a.is_at_or_below(&b) && b.is_at_or_below(&c) {
                prop_assert!(a.is_at_or_below(&c));
            }
            if a.is_at_or_below(&b) && b.is_at_or_below(&a) {
                prop_assert_eq!(a.key(), b.key());
            }
        }

        #[test]
        fn ancestors_by_segment_are_at_or_above(s in valid_id()) {
            let x = ArmId::parse(&s).unwrap();
            let segs: Vec<&str> = s[1..].split('/').collect();
            for len in 1..=segs.len() {
                if let Ok(prefix) = ArmId::parse(&format!("/{}", segs[..len].join("/"))) {
                    prop_assert!(x.is_at_or_below(&prefix));
                    prop_assert_eq!(prefix.is_at_or_below(&x), len == segs.len());
                }
            }
        }

        #[test]
        fn inserted_ambiguity_is_rejected(
            s in valid_id(),
            at in any::<prop::sample::Index>(),
            insert in prop_oneof![Just("//"), Just("/./"), Just("/../")],
        ) {
            let slashes: Vec<usize> = s.match_indices('/').map(|(i, _)| i).collect();
            let i = slashes[at.index(slashes.len())];
            let bad = format!("{}{}{}", &s[..i], insert, &s[i + 1..]);
            let err = ArmId::parse(&bad).unwrap_err();
            let expected_kind = if insert == "//" {
                matches!(err, ArmIdError::EmptySegment { .. })
            } else {
                matches!(err, ArmIdError::DotSegment { .. })
            };
            prop_assert!(expected_kind, "{} gave {:?}", bad, err);
        }

        #[test]
        fn inserted_odd_characters_are_rejected(
            s in valid_id(),
            at in any::<prop::sample::Index>(),
            c in prop_oneof![
                (0u32..0x20).prop_map(|u| char::from_u32(u).unwrap()),
                Just('\u{7f}'),
                any::<char>().prop_filter("non-ASCII", |c| !c.is_ascii()),
            ],
        ) {
            let i = 1 + at.index(s.len()); // after the leading slash
            let bad = format!("{}{}{}", &s[..i], c, &s[i..]);
            let err = ArmId::parse(&bad).unwrap_err();
            let expected = if c.is_control() {
                ArmIdError::ControlCharacter { position: i }
            } else {
                ArmIdError::NonAscii { position: i }
            };
            prop_assert_eq!(err, expected);
        }

        #[test]
        fn parse_never_panics(s in "/\\PC{0,40}") {
            let _ = ArmId::parse(&s);
        }
    }
}
