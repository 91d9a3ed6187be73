//! The grant cache's form of a grant (docs/performance.md, "Fifth pass").
//!
//! kube-runtime's store keeps whatever the watch brings, for as long as the grant exists: a
//! whole `AccessGrant` was about 2.7 KB of heap per grant, the biggest share of the operator's
//! memory at 10,000 live leases, although nothing reads a grant between its events but a few
//! periodic scans. So the cache keeps a [`CachedGrant`]: the metadata as read (kube-runtime
//! keys, triggers and finalizers on it), spec and status as one JSON document deflated against
//! a dictionary of what grants share (about 0.3 KB for a live lease), and a [`Summary`] of the
//! few facts the scans filter on, taken when the grant is packed, with the seal checked then.
//! Every reconcile starts from [`CachedGrant::unpack`]: the grant exactly as it was read,
//! status and seal included.

use std::borrow::Cow;
use std::io::{Read as _, Write as _};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use k8s_openapi::NamespaceResourceScope;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use lapse_api::lease::StatusTrust;
use lapse_api::v1alpha1::{AccessGrant, AccessGrantSpec, AccessGrantStatus, GrantPhase};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::seal::Sealer;

/// A grant as the grant cache keeps it.
#[derive(Clone, Debug)]
pub struct CachedGrant {
    metadata: ObjectMeta,
    content: Content,
}

#[derive(Clone, Debug)]
enum Content {
    /// As read, not packed yet: the watch packs every grant before the cache takes it.
    Read {
        spec: Box<AccessGrantSpec>,
        status: Option<Box<AccessGrantStatus>>,
    },
    Packed {
        /// Spec and status as deflated JSON ([`Body`]).
        body: Arc<[u8]>,
        summary: Summary,
    },
}

/// What the periodic scans filter on, so that they unpack only the grants they act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The status carries this operator's seal (checked when the grant was packed).
    pub sealed: bool,
    /// The status's phase, sealed or not.
    pub phase: Option<GrantPhase>,
    /// The status's activation and expiry, sealed or not.
    pub activated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// `spec.revoked`.
    pub revoked: bool,
    /// The sealed status claims an Azure object or counts toward a quota: the orphan sweep's
    /// rebuild of claims needs the whole status ([`crate::sweep::rebuild_claims`]).
    pub claims: bool,
}

impl Summary {
    /// `sealed`: whether the operator's seal holds on `status`.
    fn of(spec: &AccessGrantSpec, status: Option<&AccessGrantStatus>, sealed: bool) -> Self {
        Self {
            sealed,
            phase: status.map(|s| s.phase),
            activated_at: status.and_then(|s| s.activated_at),
            expires_at: status.and_then(|s| s.expires_at),
            revoked: spec.revoked,
            claims: sealed
                && status.is_some_and(|s| {
                    crate::quota::live_policy(s).is_some()
                        || !crate::inventory::claims_of(s).is_empty()
                }),
        }
    }
}

/// Spec and status, the part of a grant that is packed.
#[derive(Serialize)]
struct BodyRef<'a> {
    spec: &'a AccessGrantSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a AccessGrantStatus>,
}

#[derive(Deserialize)]
struct Body {
    spec: AccessGrantSpec,
    #[serde(default)]
    status: Option<AccessGrantStatus>,
}

impl CachedGrant {
    /// A grant as read, not packed yet.
    pub fn read(g: AccessGrant) -> Self {
        Self {
            metadata: g.metadata,
            content: Content::Read {
                spec: Box::new(g.spec),
                status: g.status.map(Box::new),
            },
        }
    }

    /// Packs spec and status, and takes the [`Summary`] with the seal checked by `sealer`.
    /// Neither managed fields nor `kubectl apply`'s copy of the whole object in an annotation
    /// are ever read; together they were about as large as the grant itself.
    pub fn pack(&mut self, sealer: &Sealer) {
        self.metadata.managed_fields = None;
        self.annotations_mut().remove(LAST_APPLIED);
        if let Some(f) = self.metadata.finalizers.as_mut() {
            f.shrink_to_fit();
        }
        let Content::Read { spec, status } = &self.content else {
            return;
        };
        let uid = self.metadata.uid.as_deref().unwrap_or_default();
        let status = status.as_deref();
        let sealed = sealer.trust(uid, status) == StatusTrust::Sealed;
        let summary = Summary::of(spec, status, sealed);
        let body = deflate(&BodyRef { spec, status });
        self.content = Content::Packed { body, summary };
    }

    /// The grant exactly as it was read (managed fields and `kubectl apply`'s annotation aside).
    pub fn unpack(&self) -> Result<AccessGrant, Error> {
        let (spec, status) = match &self.content {
            Content::Read { spec, status } => ((**spec).clone(), status.as_deref().cloned()),
            Content::Packed { body, .. } => {
                let b: Body = inflate(body).map_err(|reason| Error::Unpack {
                    grant: format!(
                        "{}/{}",
                        self.namespace().unwrap_or_default(),
                        self.name_any()
                    ),
                    reason,
                })?;
                (b.spec, b.status)
            }
        };
        Ok(AccessGrant {
            metadata: self.metadata.clone(),
            spec,
            status,
        })
    }

    /// [`Self::unpack`] for the periodic scans: a grant that does not unpack is logged and
    /// skipped (its reconcile fails loudly too).
    pub fn unpacked(&self, doing: &str) -> Option<AccessGrant> {
        self.unpack()
            .inspect_err(|e| tracing::error!(error = %e, "{doing}"))
            .ok()
    }

    /// What the scans filter on; a grant not packed yet (never in the cache) is summarised as
    /// unsealed, which no scan acts on.
    pub fn summary(&self) -> Summary {
        match &self.content {
            Content::Packed { summary, .. } => *summary,
            Content::Read { spec, status } => Summary::of(spec, status.as_deref(), false),
        }
    }
}

/// `kubectl apply`'s record of the applied manifest.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What every body is deflated against: a body with what most grants share (field names,
/// the operator's condition types, reasons and messages, ARM paths), so a grant's body costs
/// about what is its own (deflate's window reaches back into it: a preset dictionary). Each
/// body is deflated as the continuation of [`Dictionary::text`] after a sync flush, and only
/// what follows [`Dictionary::prefix`], the dictionary's own deflated form, is kept; inflating
/// `prefix` and then the body gives the dictionary and then the body.
struct Dictionary {
    text: Vec<u8>,
    prefix: Vec<u8>,
}

static DICTIONARY: std::sync::LazyLock<Dictionary> = std::sync::LazyLock::new(|| {
    let text = dictionary_text();
    let mut enc = DeflateEncoder::new(Vec::new(), LEVEL);
    // Into memory: cannot fail. An empty prefix would only make every pack fail its check
    // (`deflate`), loudly.
    let prefix = match enc.write_all(&text).and_then(|()| enc.flush()) {
        Ok(()) => enc.get_ref().clone(),
        Err(_) => Vec::new(),
    };
    Dictionary { text, prefix }
});

/// Deflate's fastest level: a grant is packed at every event, and the dictionary does most of
/// what a slower level would.
const LEVEL: Compression = Compression::fast();

/// A body as most live leases' look, from the types themselves (so it follows their field
/// names); its values only have to be typical, never right.
fn dictionary_text() -> Vec<u8> {
    use lapse_api::lease::{POLICY_ALLOWED, READY, RECONCILING, STALLED};
    use lapse_api::v1alpha1::{
        Condition, ConditionStatus, IdentityRef, ObjectIdRef, ObjectState, RoleAssignmentStatus,
        RoleRequest,
    };
    const SUB: &str = "/subscriptions/00000000-0000-4000-8000-000000000000";
    const GUID: &str = "00000000-0000-4000-8000-000000000000";
    const TIME: &str = "2026-01-01T00:00:00Z";
    let t = DateTime::parse_from_rfc3339(TIME).map_or_else(|_| Utc::now(), |t| t.to_utc());
    let scope = format!("{SUB}/resourceGroups/rg");
    let spec = AccessGrantSpec {
        identity: IdentityRef {
            managed_identity: Some(format!(
                "{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"
            )),
            service_principal: Some(ObjectIdRef {
                object_id: GUID.into(),
            }),
            ..Default::default()
        },
        roles: vec![RoleRequest {
            role: "Reader".into(),
            scope: scope.clone(),
            condition: None,
        }],
        duration: Some("1h".into()),
        justification: Some("CHG-1 ".into()),
        ..Default::default()
    };
    let condition =
        |type_: &'static str, status, reason: &'static str, message: String| Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            last_transition_time: t,
            observed_generation: Some(1),
        };
    let until = format!("access is active until {TIME}");
    let status = AccessGrantStatus {
        phase: GrantPhase::Active,
        activated_at: Some(t),
        expires_at: Some(t),
        access_may_continue_until: Some(t),
        identity_name: Some("mi/id".into()),
        role_summary: Some("Reader".into()),
        scope_summary: Some("rg".into()),
        policy: Some("policy".into()),
        principal_id: Some(GUID.into()),
        role_assignments: vec![RoleAssignmentStatus {
            role: "Reader".into(),
            role_definition_id: Some(format!(
                "{SUB}/providers/Microsoft.Authorization/roleDefinitions/{GUID}"
            )),
            scope: scope.clone(),
            id: Some(format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments/{GUID}"
            )),
            state: ObjectState::Present,
            schedule: None,
        }],
        conditions: vec![
            condition(READY, ConditionStatus::True, "Active", until.clone()),
            condition(
                RECONCILING,
                ConditionStatus::False,
                "Reconciled",
                String::new(),
            ),
            condition(
                STALLED,
                ConditionStatus::False,
                "Progressing",
                String::new(),
            ),
            condition(
                POLICY_ALLOWED,
                ConditionStatus::True,
                "Allowed",
                "allowed by AccessPolicy policy".into(),
            ),
        ],
        observed_generation: Some(1),
        message: Some(until),
        seal: Some("=".into()),
        ..Default::default()
    };
    serde_json::to_vec(&BodyRef {
        spec: &spec,
        status: Some(&status),
    })
    .unwrap_or_default()
}

/// A body deflated against [`DICTIONARY`]; empty if that failed (it cannot, into memory), which
/// fails every unpack of the grant loudly rather than reading it wrong.
fn deflate(body: &BodyRef<'_>) -> Arc<[u8]> {
    let dict = &*DICTIONARY;
    let mut enc = DeflateEncoder::new(Vec::with_capacity(dict.prefix.len() + 1024), LEVEL);
    let written = enc.write_all(&dict.text).is_ok()
        && enc.flush().is_ok()
        && serde_json::to_writer(&mut enc, body).is_ok();
    let bytes = enc.finish().unwrap_or_default();
    match bytes.strip_prefix(dict.prefix.as_slice()) {
        Some(own) if written && !dict.prefix.is_empty() => own.into(),
        _ => Arc::from(Vec::new()),
    }
}

fn inflate<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let dict = &*DICTIONARY;
    if body.is_empty() {
        return Err("nothing was packed".into());
    }
    let mut json = Vec::with_capacity(dict.text.len() + body.len() * 4);
    DeflateDecoder::new(dict.prefix.as_slice().chain(body))
        .read_to_end(&mut json)
        .map_err(|e| e.to_string())?;
    let own = json
        .strip_prefix(dict.text.as_slice())
        .ok_or("it does not continue the dictionary")?;
    serde_json::from_slice(own).map_err(|e| e.to_string())
}

/// Read straight from the API server's JSON (the watch's guard needs this); packed by the
/// watch before the cache takes it.
impl<'de> Deserialize<'de> for CachedGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AccessGrant::deserialize(d).map(Self::read)
    }
}

impl Resource for CachedGrant {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        AccessGrant::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        AccessGrant::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        AccessGrant::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        AccessGrant::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapse_api::v1alpha1::{
        Condition, ConditionStatus, IdentityRef, ObjectIdRef, ObjectState, RoleAssignmentStatus,
        RoleRequest,
    };

    const SCOPE: &str = "/subscriptions/00000000-0000-4000-8000-00000000a001/resourceGroups/rg";

    fn sealer() -> Sealer {
        Sealer::from_key(b"0123456789abcdef0123456789abcdef")
    }

    fn grant(status: Option<AccessGrantStatus>) -> AccessGrant {
        let mut g = AccessGrant::new(
            "g-1",
            AccessGrantSpec {
                identity: IdentityRef {
                    service_principal: Some(ObjectIdRef {
                        object_id: "2ff51540-7a1a-58cd-81c3-ee03bcbf7fef".into(),
                    }),
                    ..Default::default()
                },
                roles: vec![RoleRequest {
                    role: "Reader".into(),
                    scope: SCOPE.into(),
                    condition: None,
                }],
                duration: Some("30m".into()),
                justification: Some("OPS-1 nightly".into()),
                ..Default::default()
            },
        );
        g.metadata.namespace = Some("team".into());
        g.metadata.uid = Some("ab8fa32f-c170-4912-837c-324734bf4e3b".into());
        g.metadata.resource_version = Some("26".into());
        g.metadata.finalizers = Some(vec![crate::grant::FINALIZER.into()]);
        g.metadata.managed_fields = Some(vec![Default::default()]);
        g.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{\"huge\":true}".to_owned()),
                ("team.example/owner".to_owned(), "payments".to_owned()),
            ]
            .into(),
        );
        g.status = status;
        g
    }

    fn active() -> AccessGrantStatus {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        AccessGrantStatus {
            phase: GrantPhase::Active,
            activated_at: Some(t),
            expires_at: Some(t + chrono::TimeDelta::minutes(30)),
            principal_id: Some("2ff51540-7a1a-58cd-81c3-ee03bcbf7fef".into()),
            role_assignments: vec![RoleAssignmentStatus {
                role: "Reader".into(),
                role_definition_id: Some("/subscriptions/00000000-0000-4000-8000-00000000a001/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7".into()),
                scope: SCOPE.into(),
                id: Some(format!("{SCOPE}/providers/Microsoft.Authorization/roleAssignments/f7270fd5-96c0-5c55-a0e8-7b4fa9e1050b")),
                state: ObjectState::Present,
                schedule: None,
            }],
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                reason: "Active".into(),
                message: "access is active until 2027-01-15T08:30:00Z".into(),
                last_transition_time: t,
                observed_generation: Some(1),
            }],
            message: Some("access is active until 2027-01-15T08:30:00Z".into()),
            ..Default::default()
        }
    }

    /// What a reconcile starts from is the grant as read: spec, status and seal to the byte
    /// (the seal covers the status's JSON), and the metadata the operator reads.
    #[test]
    fn a_packed_grant_unpacks_to_the_grant_as_read() {
        let s = sealer();
        let read = grant(None);
        let uid = read.metadata.uid.clone().unwrap_or_default();
        let read = AccessGrant {
            status: Some(s.seal(&uid, &active())),
            ..read
        };
        let mut cached = CachedGrant::read(read.clone());
        cached.pack(&s);
        assert!(matches!(cached.content, Content::Packed { .. }));
        let back = cached.unpack().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.spec, read.spec);
        assert_eq!(back.status, read.status);
        assert_eq!(
            s.trust(&uid, back.status.as_ref()),
            StatusTrust::Sealed,
            "the seal still holds"
        );
        assert_eq!(
            back.metadata.resource_version,
            read.metadata.resource_version
        );
        assert_eq!(back.metadata.finalizers, read.metadata.finalizers);
        assert_eq!(back.labels(), read.labels());
        assert_eq!(
            back.metadata.managed_fields, None,
            "managed fields are never read"
        );
        assert_eq!(
            back.annotations().keys().collect::<Vec<_>>(),
            ["team.example/owner"],
            "kubectl's copy of the manifest is dropped, nothing else"
        );
    }

    #[test]
    fn the_summary_trusts_only_a_sealed_status() {
        let s = sealer();
        let uid = "ab8fa32f-c170-4912-837c-324734bf4e3b";
        let mut sealed = CachedGrant::read(grant(Some(s.seal(uid, &active()))));
        sealed.pack(&s);
        let summary = sealed.summary();
        assert!(summary.sealed && summary.claims);
        assert_eq!(summary.phase, Some(GrantPhase::Active));
        assert_eq!(summary.expires_at, active().expires_at);

        // A status written by someone else (or edited after the seal) is summarised as read
        // but trusted for nothing.
        let mut forged = s.seal(uid, &active());
        forged.expires_at = forged.expires_at.map(|e| e + chrono::TimeDelta::days(365));
        let mut tampered = CachedGrant::read(grant(Some(forged)));
        tampered.pack(&s);
        let summary = tampered.summary();
        assert!(!summary.sealed && !summary.claims);
        assert_eq!(summary.phase, Some(GrantPhase::Active));

        let mut fresh = CachedGrant::read(grant(None));
        fresh.pack(&s);
        assert_eq!(fresh.summary(), Summary::default());
    }

    /// The point of it: a live lease's grant takes a fraction of its JSON.
    #[test]
    fn a_live_lease_packs_small() {
        let s = sealer();
        let g = grant(Some(
            s.seal("ab8fa32f-c170-4912-837c-324734bf4e3b", &active()),
        ));
        let json = serde_json::to_vec(&BodyRef {
            spec: &g.spec,
            status: g.status.as_ref(),
        })
        .unwrap_or_default();
        let mut cached = CachedGrant::read(g);
        cached.pack(&s);
        let Content::Packed { body, .. } = &cached.content else {
            panic!("not packed")
        };
        assert!(
            body.len() * 3 < json.len(),
            "{} bytes packed of {} bytes of JSON",
            body.len(),
            json.len()
        );
    }

    /// Nothing about a grant has to resemble the dictionary: whatever it holds comes back.
    #[test]
    fn a_grant_unlike_the_dictionary_unpacks_unchanged() {
        use lapse_api::v1alpha1::{FederatedCredentialStatus, Federation, UsageStatus, Window};
        let s = sealer();
        let mut g = grant(None);
        g.spec.federation = Some(Box::new(Federation {
            service_account: "runner-ß-✓".into(),
            audience: "api://AzureADTokenExchange".into(),
        }));
        g.spec.window = Some(Box::new(Window {
            not_before: Some("2027-01-01T00:00:00Z".into()),
            not_after: None,
        }));
        g.spec.requester_groups = vec!["a".repeat(5000), String::new()];
        let mut st = active();
        st.federated_credential = Some(Box::new(FederatedCredentialStatus {
            id: None,
            name: "fic".into(),
            issuer: "https://issuer.example/\"quoted\"".into(),
            subject: "system:serviceaccount:team:runner".into(),
            state: ObjectState::Pending,
        }));
        st.usage = Some(Box::new(UsageStatus {
            tokens: u64::MAX,
            ..Default::default()
        }));
        g.status = Some(st);
        let mut cached = CachedGrant::read(g.clone());
        cached.pack(&s);
        assert!(matches!(cached.content, Content::Packed { .. }));
        let back = cached.unpack().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((back.spec, back.status), (g.spec, g.status));
    }

    #[test]
    fn an_empty_or_foreign_body_does_not_unpack() {
        assert!(inflate::<Body>(&[]).is_err());
        assert!(inflate::<Body>(b"not deflate").is_err());
    }

    #[test]
    fn a_grant_reads_from_the_api_servers_json() {
        let g = grant(Some(active()));
        let json = serde_json::to_string(&g).unwrap_or_default();
        let cached: CachedGrant = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cached.name_any(), "g-1");
        assert_eq!(cached.unpack().map(|g| g.spec).ok(), Some(grant(None).spec));
        assert_eq!(CachedGrant::plural(&()), "accessgrants");
        assert_eq!(CachedGrant::group(&()), "lapse.dev");
    }
}
