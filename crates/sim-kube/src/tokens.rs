//! ServiceAccount tokens: RS256 JWTs in the shape kube-apiserver issues, the OIDC discovery
//! document and JWKS that publish the verification key, and token verification.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};

use crate::Error;

/// The signing key and the issuer it signs for.
#[derive(Debug)]
pub(crate) struct Signer {
    key: KeyPair,
    kid: String,
    pub issuer: String,
}

/// The identity a valid token names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenSubject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub audiences: Vec<String>,
}

impl Signer {
    pub fn generate(issuer: String) -> Result<Self, Error> {
        let key = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|e| Error::SigningKey(format!("generating an RSA-2048 key: {e}")))?;
        let der = key
            .public_key()
            .as_der()
            .map_err(|e| Error::SigningKey(format!("encoding the public key: {e}")))?;
        // Like kube-apiserver: the key ID is the base64url SHA-256 of the DER public key.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
        Ok(Self {
            key,
            kid: B64URL.encode(digest.as_ref()),
            issuer,
        })
    }

    fn components(&self) -> (Vec<u8>, Vec<u8>) {
        let pk = self.key.public_key();
        (
            pk.modulus().big_endian_without_leading_zero().to_vec(),
            pk.exponent().big_endian_without_leading_zero().to_vec(),
        )
    }

    pub fn jwks(&self) -> Value {
        let (n, e) = self.components();
        json!({"keys": [{"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
            "n": B64URL.encode(n), "e": B64URL.encode(e)}]})
    }

    pub fn openid_configuration(&self, jwks_uri: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    /// Issues a token for a ServiceAccount, valid from `now` for `ttl_secs`.
    pub fn issue(&self, sa: &TokenSubject, now: i64, ttl_secs: i64) -> Result<String, String> {
        let header = json!({"alg": "RS256", "kid": self.kid});
        let claims = json!({
            "aud": sa.audiences,
            "exp": now + ttl_secs,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": {"namespace": sa.namespace, "serviceaccount": {"name": sa.name, "uid": sa.uid}},
            "sub": format!("system:serviceaccount:{}:{}", sa.namespace, sa.name),
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
    }

    /// Verifies signature, issuer and time; returns the subject and audiences.
    pub fn verify(&self, token: &str, now: i64) -> Option<TokenSubject> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let sig = B64URL.decode(s).ok()?;
        let (n, e) = self.components();
        let public = RsaPublicKeyComponents { n: &n, e: &e };
        public
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                format!("{h}.{c}").as_bytes(),
                &sig,
            )
            .ok()?;
        let claims: Value = serde_json::from_slice(&B64URL.decode(c).ok()?).ok()?;
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return None;
        }
        let (exp, nbf) = (claims["exp"].as_i64()?, claims["nbf"].as_i64().unwrap_or(0));
        if now >= exp || now < nbf {
            return None;
        }
        let k = &claims["kubernetes.io"];
        Some(TokenSubject {
            namespace: k["namespace"].as_str()?.to_owned(),
            name: k["serviceaccount"]["name"].as_str()?.to_owned(),
            uid: k["serviceaccount"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            audiences: claims["aud"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampering_or_expiry_fails() {
        let s = Signer::generate("https://issuer.test".into()).unwrap();
        let sub = TokenSubject {
            namespace: "demo".into(),
            name: "bot".into(),
            uid: "u1".into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
        };
        let t = s.issue(&sub, 1_000, 600).unwrap();
        assert_eq!(s.verify(&t, 1_100), Some(sub));
        assert_eq!(s.verify(&t, 1_600), None, "expired");
        let mut tampered = t.clone();
        tampered.insert(t.find('.').unwrap() + 2, 'x');
        assert_eq!(s.verify(&tampered, 1_100), None);
        let other = Signer::generate("https://issuer.test".into()).unwrap();
        assert_eq!(other.verify(&t, 1_100), None, "another key's token");
        assert_eq!(s.jwks()["keys"][0]["kty"], "RSA");
    }
}
