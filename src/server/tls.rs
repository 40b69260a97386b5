//! The rustls server configuration: TLS 1.2 and 1.3 only, AEAD suites only, ALPN h2 and
//! http/1.1, and optional client-certificate verification (mTLS).
//!
//! The whole `ServerConfig` is rebuilt on reload and swapped in, so new certificates and CA
//! bundles apply to the next handshake without restarting or dropping open connections.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use x509_parser::extensions::GeneralName;

use super::certs::{self, CertError};
use crate::config::{ClientAuth, Config};
use crate::gate::context::{ClientIdentity, ClientTrust};

/// Builds the TLS configuration for the public listener, and the digest of its
/// client-certificate trust (from the very bytes its verifier was built from).
pub fn server_config(config: &Config) -> Result<(Arc<ServerConfig>, ClientTrust), CertError> {
    let pair = certs::load(config)?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|suite| match suite {
        rustls::SupportedCipherSuite::Tls13(_) => true,
        rustls::SupportedCipherSuite::Tls12(suite) => suite
            .common
            .suite
            .as_str()
            .is_some_and(|name| name.contains("GCM") || name.contains("CHACHA20_POLY1305")),
    });
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| CertError::Tls(err.to_string()))?;
    let (builder, trust) = match &config.listen.client_auth {
        ClientAuth::None => (builder.with_no_client_auth(), client_trust("none", &[])),
        ClientAuth::Optional { ca } | ClientAuth::Required { ca } => {
            let optional = matches!(config.listen.client_auth, ClientAuth::Optional { .. });
            let (roots, bundle) = certs::read_ca(ca)?;
            let mode = if optional { "optional" } else { "required" };
            let roots = Arc::new(roots);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|err| CertError::File {
                path: ca.clone(),
                message: format!("cannot use CA bundle: {err}"),
            })?;
            (
                builder.with_client_cert_verifier(verifier),
                client_trust(mode, &bundle),
            )
        }
    };
    let cert_path = match &config.listen.tls {
        crate::config::TlsSource::Files { cert, .. } => cert.clone(),
        crate::config::TlsSource::DevCert => config.data_dir.join(certs::DEV_CERT),
    };
    let mut server = builder
        .with_single_cert(pair.chain, pair.key)
        .map_err(|err| CertError::File {
            path: cert_path,
            message: format!("certificate and key do not form a usable pair: {err}"),
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our suite order (strongest first), not the client's.
    server.ignore_client_order = true;
    Ok((Arc::new(server), trust))
}

/// The digest of the client-certificate settings: the mode and the CA bundle's bytes.
fn client_trust(mode: &str, bundle: &[u8]) -> ClientTrust {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    digest.update(mode.as_bytes());
    digest.update(bundle);
    ClientTrust(digest.finalize().into())
}

/// Extracts subject and SANs from a certificate verified under `trust`.
pub fn client_identity(
    cert: &rustls::pki_types::CertificateDer<'_>,
    trust: ClientTrust,
) -> Option<ClientIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let sans = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(format!("DNS:{dns}")),
                    GeneralName::URI(uri) => Some(format!("URI:{uri}")),
                    GeneralName::RFC822Name(mail) => Some(format!("email:{mail}")),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ClientIdentity {
        subject: parsed.subject().to_string(),
        sans,
        trust,
    })
}
