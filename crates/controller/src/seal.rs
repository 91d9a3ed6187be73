//! The operator's seal on AccessGrant status.
//!
//! The status subresource can be written by anyone RBAC lets patch `accessgrants/status`, and a
//! wildcard Role on `lapse.dev` does. So the operator signs every status it writes with an
//! HMAC-SHA256 keyed by a Secret in its own namespace, bound to the grant's UID, and reads a
//! status only when the seal holds. Anything else is tampering: the core believes nothing in it
//! and ends the lease (docs/security.md, "Status is not a record of truth").

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use lapse_api::lease::StatusTrust;
use lapse_api::v1alpha1::AccessGrantStatus;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// The Secret data key holding the seal key.
const KEY_FIELD: &str = "key";
/// Bytes of a generated key (HMAC-SHA256's block-sized key would be 64; 32 is its output).
const KEY_LEN: usize = 32;
/// Domain separation: a seal over a grant status cannot be confused with any other MAC.
const CONTEXT: &[u8] = b"lapse.dev/v1alpha1 AccessGrant status seal\n";

/// Seals and checks grant statuses.
pub struct Sealer {
    key: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { key: [redacted] }")
    }
}

impl Sealer {
    pub fn from_key(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The bytes the seal covers: the grant's UID and the status without its seal, as JSON.
    fn message(uid: &str, status: &AccessGrantStatus) -> Vec<u8> {
        let mut unsealed = status.clone();
        unsealed.seal = None;
        let mut out = CONTEXT.to_vec();
        out.extend_from_slice(uid.as_bytes());
        out.push(b'\n');
        // Serializing a plain struct of strings, numbers and maps cannot fail; an empty body
        // would only make every seal mismatch, which fails closed.
        out.extend(serde_json::to_vec(&unsealed).unwrap_or_default());
        out
    }

    /// The status with this operator's seal set.
    pub fn seal(&self, uid: &str, status: &AccessGrantStatus) -> AccessGrantStatus {
        let tag = hmac::sign(&self.key, &Self::message(uid, status));
        let mut sealed = status.clone();
        sealed.seal = Some(STANDARD.encode(tag.as_ref()));
        sealed
    }

    /// How far a stored status can be believed.
    pub fn trust(&self, uid: &str, status: Option<&AccessGrantStatus>) -> StatusTrust {
        let Some(status) = status else {
            return StatusTrust::Absent;
        };
        let Some(seal) = status.seal.as_deref() else {
            return StatusTrust::Tampered {
                detail: "the status carries no seal".into(),
            };
        };
        let Ok(tag) = STANDARD.decode(seal) else {
            return StatusTrust::Tampered {
                detail: "the status seal is not base64".into(),
            };
        };
        match hmac::verify(&self.key, &Self::message(uid, status), &tag) {
            Ok(()) => StatusTrust::Sealed,
            Err(_) => StatusTrust::Tampered {
                detail: "the status does not match its seal".into(),
            },
        }
    }
}

/// Reads the seal key from `namespace/name`, creating the Secret with a fresh random key when it
/// does not exist yet. Losing the Secret makes every stored status unverifiable, which ends every
/// live lease (fail closed): back it up with the cluster's other Secrets.
pub async fn load_or_create(client: &kube::Client, namespace: &str, name: &str) -> Result<Sealer> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = format!("Secret {namespace}/{name} (the status seal key)");
    let read = |s: Secret| -> Result<Sealer> {
        let key = s
            .data
            .as_ref()
            .and_then(|d| d.get(KEY_FIELD))
            .filter(|k| k.0.len() >= KEY_LEN)
            .ok_or_else(|| Error::SealKey {
                what: what.clone(),
                reason: format!(
                    "its `{KEY_FIELD}` entry is missing or shorter than {KEY_LEN} bytes; delete \
                     the Secret to have a new key made (every live lease then ends)"
                ),
            })?;
        Ok(Sealer::from_key(&key.0))
    };
    let access = |e: kube::Error| Error::SealKey {
        what: what.clone(),
        reason: format!(
            "{e}; the operator needs get and create on secrets in its namespace \
             (config/rbac/role.yaml)"
        ),
    };
    if let Some(s) = api.get_opt(name).await.map_err(access)? {
        return read(s);
    }
    let mut key = vec![0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Error::SealKey {
            what: what.clone(),
            reason: "the system random number generator failed".into(),
        })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "lapse-operator".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(KEY_FIELD.to_owned(), ByteString(key))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(s) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "created the status seal key");
            read(s)
        }
        // Another replica made it first: use theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => read(api.get(name).await.map_err(access)?),
        Err(e) => Err(access(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapse_api::v1alpha1::{GrantPhase, RoleAssignmentStatus};

    fn status() -> AccessGrantStatus {
        AccessGrantStatus {
            phase: GrantPhase::Active,
            activated_at: chrono::DateTime::from_timestamp(1_790_000_000, 123_000_000),
            principal_id: Some("11111111-2222-3333-4444-555555555555".into()),
            role_assignments: vec![RoleAssignmentStatus {
                schedule: None,
                role: "Reader".into(),
                scope: "/subscriptions/s".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_sealed_status_is_trusted_after_a_round_trip_through_json() {
        let s = Sealer::from_key(&[7; 32]);
        let sealed = s.seal("uid-1", &status());
        let stored: AccessGrantStatus =
            serde_json::from_value(serde_json::to_value(&sealed).unwrap()).unwrap();
        assert_eq!(s.trust("uid-1", Some(&stored)), StatusTrust::Sealed);
        assert_eq!(s.trust("uid-1", None), StatusTrust::Absent);
    }

    #[test]
    fn any_change_another_grant_or_another_key_breaks_the_seal() {
        let s = Sealer::from_key(&[7; 32]);
        let sealed = s.seal("uid-1", &status());
        let tampered = |st: &AccessGrantStatus| {
            matches!(s.trust("uid-1", Some(st)), StatusTrust::Tampered { .. })
        };
        let mut principal = sealed.clone();
        principal.principal_id = Some("77777777-2222-3333-4444-555555555555".into());
        assert!(tampered(&principal));
        let mut later = sealed.clone();
        later.activated_at = later.activated_at.map(|a| a + chrono::TimeDelta::hours(1));
        assert!(tampered(&later));
        let mut id = sealed.clone();
        id.role_assignments[0].id = Some("/subscriptions/s/x".into());
        assert!(tampered(&id));
        let mut unsealed = sealed.clone();
        unsealed.seal = None;
        assert!(tampered(&unsealed));
        let mut garbage = sealed.clone();
        garbage.seal = Some("not base64!".into());
        assert!(tampered(&garbage));
        // Copied from another grant, or sealed with another operator's key.
        assert!(matches!(
            s.trust("uid-2", Some(&sealed)),
            StatusTrust::Tampered { .. }
        ));
        let other = Sealer::from_key(&[8; 32]);
        assert!(matches!(
            other.trust("uid-1", Some(&sealed)),
            StatusTrust::Tampered { .. }
        ));
    }
}
