//! TLS to the server (`sslmode=require`, `verify-ca`, `verify-full`). The
//! certificate is verified in every mode, as `verify-full` does: a team's
//! results and its credentials cross the network, and a certificate nobody
//! checks protects against nobody. A private CA (a cloud provider's, or a
//! team's own) is added with `sslrootcert=FILE`, a PEM file.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The client's TLS settings: the system's roots, and those of `root_file`
/// (`system`, as libpq 16 reads it, adds none).
pub fn config(root_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let root_file = root_file.filter(|f| *f != "system");
    let mut roots = RootCertStore::empty();
    // Certificates the system has that rustls cannot read are skipped, as
    // reqwest does for model endpoints.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = root_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("sslrootcert={path}: cannot read PEM certificates ({e})"))?;
        if certs.is_empty() {
            return Err(format!(
                "sslrootcert={path}: no PEM certificate in the file"
            ));
        }
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "sslrootcert={path}: no certificate rustls can use as a root"
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
