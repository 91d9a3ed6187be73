//! The simulator's own certificate authority and its loopback server certificate
//! (SANs `127.0.0.1` and `localhost`), served with rustls.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::SimAzureError;

/// A fresh CA and a server configuration presenting a certificate it signed.
#[derive(Debug)]
pub(crate) struct Pki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> SimAzureError {
    SimAzureError::Tls(format!("{what}: {e}"))
}

/// Generates a CA named `name` and a server certificate for loopback.
pub(crate) fn generate(name: &str) -> Result<Pki, SimAzureError> {
    let ca_key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA params", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| tls_err("CA certificate", e))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let leaf_key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .map_err(|e| tls_err("server params", e))?;
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| tls_err("server certificate", e))?;

    // Explicit provider: the workspace enables both ring and aws-lc-rs in rustls, so the
    // process default cannot be inferred from features.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .map_err(|e| tls_err("server certificate chain", e))?;
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(server_config),
    })
}
