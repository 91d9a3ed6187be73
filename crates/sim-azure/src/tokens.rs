//! RS256 signing keys: the simulator's Entra access tokens, and helpers to publish a key as JWKS.

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::SimAzureError;

/// jsonwebtoken picks its crypto provider from crate features; when the workspace enables more
/// than one, it must be installed explicitly.
pub(crate) fn install_jwt_provider() {
    let _already = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
    );
}

/// An RSA key that signs RS256 JWTs and publishes its public half as a JWK.
#[derive(Clone)]
pub(crate) struct RsaSigner {
    pub kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl RsaSigner {
    pub fn generate() -> Result<Self, SimAzureError> {
        install_jwt_provider();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|e| SimAzureError::SigningKey(format!("RSA key generation: {e}")))?;
        let encoding = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())
            .map_err(|e| SimAzureError::SigningKey(format!("RSA key encoding: {e}")))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| SimAzureError::SigningKey(format!("JWK of the RSA key: {e}")))?;
        let kid = uuid::Uuid::new_v4().simple().to_string();
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        let decoding = DecodingKey::from_jwk(&jwk)
            .map_err(|e| SimAzureError::SigningKey(format!("decoding key from JWK: {e}")))?;
        Ok(Self {
            kid,
            encoding,
            decoding,
            jwk,
        })
    }

    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// Verifies signature and expiry (no audience check: callers check it).
    pub fn verify<T: for<'de> Deserialize<'de>>(
        &self,
        token: &str,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(jsonwebtoken::decode::<T>(token, &self.decoding, &validation)?.claims)
    }
}

/// Claims of the access tokens the simulator issues (the subset of Entra's that ARM reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub oid: String,
    pub sub: String,
    pub tid: String,
    pub appid: String,
    pub azp: String,
    pub idtyp: String,
    pub ver: String,
    pub uti: String,
    /// Application permissions for the resource (Microsoft Graph tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}
