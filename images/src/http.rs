//! The HTTP(S) agent image servers are reached with: rustls on ring, trusting the system's
//! CA store as rustls-native-certs finds it (so `SSL_CERT_FILE` and `SSL_CERT_DIR` are
//! honoured, which is how tests bring their own CA).

use std::sync::Arc;
use std::time::Duration;

use crate::ImageError;

/// A fresh agent. Built per client: the CA store is read when the client is made, so a
/// changed `SSL_CERT_FILE` takes effect for the next one.
pub fn agent() -> Result<ureq::Agent, ImageError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    // With no CA at all, HTTPS fails later with an unknown-issuer error naming the server;
    // plain http:// remotes still work.
    let _ = roots.add_parsable_certificates(found.certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImageError::Invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .timeout_connect(Duration::from_secs(30))
        // A stalled transfer fails instead of hanging a launch forever.
        .timeout_read(Duration::from_secs(120))
        .user_agent(concat!("hutch/", env!("CARGO_PKG_VERSION")))
        .build())
}
