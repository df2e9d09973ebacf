//! TLS for hutch: the daemon's and the client's own certificates (ECDSA P-384, self-signed,
//! as LXD makes them), certificate fingerprints (sha256 of the DER, in hex), and rustls
//! configs:
//! - the server side asks every client for a certificate but accepts any: who is trusted is
//!   decided afterwards, against the trust store, from the fingerprint;
//! - the client side trusts one pinned certificate (a remote's `servercerts/NAME.crt`, a
//!   migration source's `certificate`), or the system CAs, or records whatever it is shown
//!   (first contact, to print the fingerprint for the user to accept).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("Failed to generate a certificate: {0}")]
    Generate(String),
    #[error("Invalid certificate: {0}")]
    BadCertificate(String),
    #[error("Invalid private key: {0}")]
    BadKey(String),
    #[error("TLS setup: {0}")]
    Setup(String),
}

pub type Result<T> = std::result::Result<T, TlsError>;

/// What a certificate is for: the daemon's (`serverAuth`, named after the host) or a
/// client's (`clientAuth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh self-signed certificate, valid ten years, as LXD makes `server.crt` and
    /// `client.crt`: organisation `linuxcontainers.org`, common name `root@<host>`, the host
    /// name as first DNS name (Go clients take it as the server name), and loopback IPs.
    pub fn generate(kind: Kind) -> Result<Identity> {
        let host = hostname();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![host.clone()])
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        if kind == Kind::Server {
            for ip in ["127.0.0.1", "::1"] {
                params
                    .subject_alt_names
                    .push(rcgen::SanType::IpAddress(ip.parse().expect("ip")));
            }
        }
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "linuxcontainers.org");
        dn.push(rcgen::DnType::CommonName, format!("root@{host}"));
        params.distinguished_name = dn;
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        // A server is a client too: of the other cluster members, and of etcd, which
        // (Go's TLS) admits a client certificate only with the clientAuth usage.
        params.extended_key_usages = match kind {
            Kind::Server => vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Kind::Client => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        };
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// An identity from PEM text (the first certificate, the first private key).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity> {
        let cert_der = cert_der_of_pem(cert_pem)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| TlsError::BadKey(e.to_string()))?
            .ok_or_else(|| TlsError::BadKey("no private key in the PEM".into()))?;
        Ok(Identity {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der,
            key_der: key.secret_der().to_vec(),
        })
    }

    /// Reads `cert` and `key`, or makes both when neither exists (the key 0600, each file
    /// written whole under a temporary name and renamed, so a crash leaves none or both).
    pub fn load_or_create(cert: &Path, key: &Path, kind: Kind) -> Result<Identity> {
        if cert.exists() || key.exists() {
            let cert_pem = read(cert)?;
            let key_pem = read(key)?;
            return Identity::from_pem(&cert_pem, &key_pem);
        }
        let id = Identity::generate(kind)?;
        write_atomic(key, id.key_pem.as_bytes(), 0o600)?;
        write_atomic(cert, id.cert_pem.as_bytes(), 0o644)?;
        Ok(id)
    }

    /// The certificate and its signing key, as rustls presents them.
    pub fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>> {
        let (chain, key) = self.rustls_parts();
        let signer = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey(e.to_string()))?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signer)))
    }

    /// Writes the certificate and key to `cert` and `key` (the key 0600), each whole.
    pub fn save(&self, cert: &Path, key: &Path) -> Result<()> {
        write_atomic(key, self.key_pem.as_bytes(), 0o600)?;
        write_atomic(cert, self.cert_pem.as_bytes(), 0o644)
    }

    /// The certificate's fingerprint: sha256 of its DER, lower-case hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// The chain and key for rustls.
    pub fn rustls_parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = PrivateKeyDer::try_from(self.key_der.clone()).expect("key parsed before");
        (vec![CertificateDer::from(self.cert_der.clone())], key)
    }

    /// A server config presenting this identity that asks clients for a certificate but
    /// lets them in without one (the API then decides what an untrusted caller may see).
    /// TLS 1.2 and 1.3; `http/1.1` over ALPN.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let (chain, key) = self.rustls_parts();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AnyClientCert))
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificate a server presents, changeable while it serves (a cluster member that
/// joins takes the cluster's certificate in place of its own, as LXD's members share one).
#[derive(Debug)]
pub struct CertSwitch(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl CertSwitch {
    /// Presenting `identity`.
    pub fn new(identity: &Identity) -> Result<Arc<CertSwitch>> {
        Ok(Arc::new(CertSwitch(std::sync::RwLock::new(
            identity.certified_key()?,
        ))))
    }

    /// From the next handshake on, presenting `identity`.
    pub fn set(&self, identity: &Identity) -> Result<()> {
        let key = identity.certified_key()?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// A server config presenting what this switch holds at each handshake; otherwise as
    /// [`Identity::server_config`].
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AnyClientCert))
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl rustls::server::ResolvesServerCert for CertSwitch {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Which server certificates a client config accepts.
#[derive(Clone)]
pub enum ServerTrust {
    /// Exactly this certificate (DER), whatever names it carries: a remote's stored
    /// certificate or a peer's advertised one.
    Pinned(Vec<u8>),
    /// Certificates that chain to the system's CAs and name the host.
    System,
    /// Anything, recording the certificate seen (first contact, to show its fingerprint).
    Record(Arc<Mutex<Option<Vec<u8>>>>),
}

/// A client config with `trust` for the server and, when given, `identity` as the client
/// certificate.
pub fn client_config(
    trust: ServerTrust,
    identity: Option<&Identity>,
) -> Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match trust {
        ServerTrust::System => {
            let mut roots = rustls::RootCertStore::empty();
            let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            builder.with_root_certificates(roots)
        }
        other => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer { trust: other })),
    };
    let config = match identity {
        Some(id) => {
            let (chain, key) = id.rustls_parts();
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Setup(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// sha256 of a DER certificate, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The DER of the first certificate in `pem`.
pub fn cert_der_of_pem(pem: &str) -> Result<Vec<u8>> {
    let first = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| TlsError::BadCertificate("no certificate in the PEM".into()))?
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    Ok(first.to_vec())
}

/// A DER certificate as PEM text.
pub fn pem_of_der(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The certificate given as PEM or as base64 DER without armour (how `POST
/// /1.0/certificates` carries it), as DER. Only well-formed X.509 is accepted.
pub fn cert_der_of_text(text: &str) -> Result<Vec<u8>> {
    let der = if text.contains("-----BEGIN") {
        cert_der_of_pem(text)?
    } else {
        base64_decode(text).ok_or_else(|| TlsError::BadCertificate("not base64".into()))?
    };
    check_x509(&der)?;
    Ok(der)
}

/// Refuses bytes that are not an X.509 certificate rustls can use.
pub fn check_x509(der: &[u8]) -> Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der.to_vec()))
        .map_err(|e| TlsError::BadCertificate(e.to_string()))
}

/// ring's provider, made once: every handshake's signature check asks for it.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        "unspecified".into()
    } else {
        name
    }
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|source| TlsError::Io {
        path: p.display().to_string(),
        source,
    })
}

/// Writes `data` to `path` through a temporary file in the same directory, renamed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The handshake-signature checks both verifiers share: whoever a certificate belongs to,
/// the peer must prove it holds the certificate's key, by ring's algorithms.
mod handshake {
    use super::*;

    pub fn tls12(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    pub fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    pub fn schemes() -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Asks for a client certificate and accepts any (the handshake still proves the client
/// holds its key); trust is decided from the fingerprint afterwards.
#[derive(Debug)]
struct AnyClientCert;

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        handshake::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        handshake::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        handshake::schemes()
    }
}

/// Server verification by exact certificate (`Pinned`) or none at all (`Record`).
#[derive(Debug)]
struct PinnedServer {
    trust: ServerTrust,
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTrust::Pinned(der) => write!(f, "Pinned({})", fingerprint(der)),
            ServerTrust::System => write!(f, "System"),
            ServerTrust::Record(_) => write!(f, "Record"),
        }
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            ServerTrust::Pinned(der) if der.as_slice() == end_entity.as_ref() => {
                Ok(ServerCertVerified::assertion())
            }
            ServerTrust::Pinned(der) => Err(rustls::Error::General(format!(
                "the server's certificate {} is not the trusted {}",
                fingerprint(end_entity),
                fingerprint(der)
            ))),
            ServerTrust::Record(seen) => {
                *seen.lock().expect("lock") = Some(end_entity.to_vec());
                Ok(ServerCertVerified::assertion())
            }
            ServerTrust::System => unreachable!("system trust uses webpki"),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        handshake::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        handshake::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        handshake::schemes()
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (certificates and trust tokens).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard or URL-safe base64, padding optional, whitespace ignored; None when malformed.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' | b'\n' | b'\r' | b' ' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_p384_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        let a = Identity::load_or_create(&crt, &key, Kind::Server).unwrap();
        let b = Identity::load_or_create(&crt, &key, Kind::Server).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(a.key_pem.contains("PRIVATE KEY"));
        a.server_config().unwrap();
        client_config(ServerTrust::Pinned(a.cert_der.clone()), Some(&a)).unwrap();
    }

    #[test]
    fn pem_and_base64_round_trip() {
        let id = Identity::generate(Kind::Client).unwrap();
        let pem = pem_of_der(&id.cert_der);
        assert_eq!(cert_der_of_pem(&pem).unwrap(), id.cert_der);
        assert_eq!(cert_der_of_text(&pem).unwrap(), id.cert_der);
        let bare = base64_encode(&id.cert_der);
        assert_eq!(cert_der_of_text(&bare).unwrap(), id.cert_der);
        for s in ["", "a", "ab", "abc", "abcd", "hello world!"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert!(cert_der_of_text("not a certificate").is_err());
        assert!(cert_der_of_text(&base64_encode(b"garbage")).is_err());
    }
}
