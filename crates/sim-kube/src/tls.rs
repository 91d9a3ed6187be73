//! The server's own certificate authority and serving certificate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// A freshly generated CA and a serving certificate it signed.
#[derive(Debug)]
pub(crate) struct Pki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

fn tls_err(what: &'static str) -> impl Fn(rcgen::Error) -> Error {
    move |e| Error::Tls(format!("{what}: {e}"))
}

/// Generates a CA and a server certificate for 127.0.0.1, ::1 and localhost.
pub(crate) fn generate() -> Result<Pki, Error> {
    let ca_key = KeyPair::generate().map_err(tls_err("CA key"))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA params"))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "lapse sim-kube CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err("CA cert"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(tls_err("server key"))?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned()]).map_err(tls_err("server params"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "sim-kube");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .map_err(tls_err("server cert"))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(server_cert.der().to_vec()),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .map_err(|e| Error::Tls(format!("server certificate: {e}")))?;
    // Only HTTP/1.1 is served; Go and hyper clients fall back to it without ALPN h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(config),
    })
}
