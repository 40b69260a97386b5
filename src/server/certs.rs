//! Server certificates: loading PEM files, and the self-signed development certificate.
//!
//! A clinic trying Wardgate should not have to make a certificate first, so without
//! `[listen] tls` a self-signed certificate is generated into the data directory on first
//! start and reused after. It is never trusted by browsers, and a loud warning says so.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, TlsSource};

/// A certificate chain and its key.
#[derive(Debug)]
pub struct CertPair {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The development certificate could not be created.
    #[error("cannot create development certificate: {0}")]
    DevCert(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// File names of the development certificate inside the data directory.
pub const DEV_CERT: &str = "dev-cert.pem";
const DEV_KEY: &str = "dev-key.pem";

/// Loads the configured certificate, creating the development one if needed.
pub fn load(config: &Config) -> Result<CertPair, CertError> {
    match &config.listen.tls {
        TlsSource::Files { cert, key } => read_pair(cert, key),
        TlsSource::DevCert => {
            let cert = config.data_dir.join(DEV_CERT);
            let key = config.data_dir.join(DEV_KEY);
            if !cert.exists() || !key.exists() || expiring(&cert) {
                create_dev_cert(config, &cert, &key)?;
            }
            tracing::warn!(cert = %cert.display(), "USING A SELF-SIGNED DEVELOPMENT CERTIFICATE: configure [listen] tls = {{ cert, key }} before real use");
            read_pair(&cert, &key)
        }
    }
}

/// Reads a PEM chain and key.
pub fn read_pair(cert: &Path, key: &Path) -> Result<CertPair, CertError> {
    let file_error = |path: &Path, message: String| CertError::File {
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| file_error(cert, format!("cannot read certificate: {err}")))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no certificate in file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| file_error(key, format!("cannot read private key: {err}")))?;
    Ok(CertPair { chain, key })
}

/// Reads a PEM CA bundle; returns its certificates and the bytes they were read from.
pub fn read_ca(path: &Path) -> Result<(rustls::RootCertStore, Vec<u8>), CertError> {
    let unreadable = |message: String| CertError::File {
        path: path.to_path_buf(),
        message: format!("cannot read CA bundle: {message}"),
    };
    let bytes = std::fs::read(path).map_err(|err| unreadable(err.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| unreadable(err.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(CertError::File {
            path: path.to_path_buf(),
            message: "no usable CA certificate".into(),
        });
    }
    Ok((roots, bytes))
}

/// Validity of a generated development certificate (the CA/Browser Forum maximum is 398).
const DEV_CERT_DAYS: i64 = 397;
/// A development certificate this close to expiry is replaced on start.
const RENEW_BEFORE_DAYS: i64 = 30;

/// Whether the certificate at `path` expires within [`RENEW_BEFORE_DAYS`] (or is unreadable).
fn expiring(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return true;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&bytes) else {
        return true;
    };
    let Ok(cert) = pem.parse_x509() else {
        return true;
    };
    let renew_at = time::OffsetDateTime::now_utc() + time::Duration::days(RENEW_BEFORE_DAYS);
    cert.validity().not_after.timestamp() < renew_at.unix_timestamp()
}

fn create_dev_cert(config: &Config, cert: &Path, key: &Path) -> Result<(), CertError> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let public_host = config.listen.public_url.trim_start_matches("https://");
    let public_host = public_host
        .rsplit_once(':')
        .map_or(public_host, |(host, _)| host);
    let public_host = public_host.trim_start_matches('[').trim_end_matches(']');
    if !names.iter().any(|n| n == public_host) {
        names.push(public_host.to_string());
    }
    // Short-lived like a public certificate (TLS scanners flag longer ones); renewed on start
    // when fewer than RENEW_BEFORE_DAYS remain.
    let failed = |e: rcgen::Error| CertError::DevCert(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(DEV_CERT_DAYS);
    let signing_key = rcgen::KeyPair::generate().map_err(failed)?;
    let certificate = params.self_signed(&signing_key).map_err(failed)?;
    let generated = rcgen::CertifiedKey {
        cert: certificate,
        signing_key,
    };
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| CertError::DevCert(format!("{}: {e}", config.data_dir.display())))?;
    write_private(key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, generated.cert.pem())
        .map_err(|e| CertError::DevCert(format!("{}: {e}", cert.display())))?;
    tracing::warn!(cert = %cert.display(), "generated a self-signed development certificate");
    Ok(())
}

/// Writes a secret file readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CertError::DevCert(format!("{}: {e}", path.display())))?;
    file.write_all(bytes)
        .map_err(|e| CertError::DevCert(format!("{}: {e}", path.display())))
}
