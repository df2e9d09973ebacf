//! The client for LXD-protocol image servers (an LXD, another hutchd), as an untrusted
//! caller, the way LXD's `ImageDownload` uses one: an alias resolved with
//! `GET /1.0/images/aliases/<name>`, the image (or a fingerprint prefix) read with
//! `GET /1.0/images/<fp>[?secret=]`, and its files streamed from
//! `GET /1.0/images/<fp>/export[?secret=]`: one unified tarball, or a split image as
//! multipart/form-data with parts `metadata` then `rootfs` (`rootfs.img`).
//!
//! The server is pinned to the certificate the request carries (PEM), or verified against
//! the system's CAs when there is none. Errors carry the server's own message ("Image not
//! found").

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use hutch_api::percent_encode;
use serde::Deserialize;

use crate::multipart::{parse_header_value, MultipartReader};
use crate::ImageError;

/// What an LXD server says of one image (`GET /1.0/images/<fp>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LxdImage {
    pub fingerprint: String,
    #[serde(default)]
    pub architecture: String,
    /// `container` or `virtual-machine` (empty from old servers: a container).
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub public: bool,
    /// Bytes of the image's files together.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub filename: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub created_at: String,
}

/// An image's files as the export sends them.
pub enum LxdExport {
    /// A unified tarball, with the file name the server gives it.
    Unified {
        filename: String,
        body: Box<dyn Read + Send>,
    },
    /// A split image: the caller reads the parts in order with
    /// [`MultipartReader::next_part`].
    Split(MultipartReader<Box<dyn Read + Send>>),
}

/// Called with the bytes of the export read so far and its length when the server said it.
pub type ExportProgress = Box<dyn FnMut(u64, Option<u64>) + Send>;

/// An LXD-protocol server at a base URL.
#[derive(Debug, Clone)]
pub struct LxdRemote {
    base: String,
    agent: ureq::Agent,
}

/// LXD's response envelope; only what a client needs of it.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    error: String,
    metadata: Option<T>,
}

#[derive(Debug, Deserialize)]
struct AliasEntry {
    #[serde(default)]
    target: String,
    #[serde(rename = "type", default)]
    kind: String,
}

impl LxdRemote {
    /// A client for the server at `base` (`https://host:port`); `certificate`, when not
    /// empty, is the server's certificate (PEM) and the only one accepted.
    pub fn new(base: &str, certificate: &str) -> Result<Self, ImageError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            return Err(ImageError::Invalid(format!(
                "LXD image server URL {base:?} is not https://"
            )));
        }
        let trust = if certificate.trim().is_empty() {
            hutch_tls::ServerTrust::System
        } else {
            let der = hutch_tls::cert_der_of_text(certificate)
                .map_err(|e| ImageError::Invalid(format!("certificate of {base}: {e}")))?;
            hutch_tls::ServerTrust::Pinned(der)
        };
        let tls = hutch_tls::client_config(trust, None)
            .map_err(|e| ImageError::Invalid(format!("TLS setup for {base}: {e}")))?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::clone(&tls))
            .timeout_connect(Duration::from_secs(30))
            // A stalled transfer fails instead of hanging a launch forever.
            .timeout_read(Duration::from_secs(120))
            .user_agent(concat!("hutch/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(LxdRemote { base, agent })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The image `name` names for a caller without a secret, as LXD resolves it: an alias
    /// of type `container` first, else a fingerprint or a unique prefix of one. Also says
    /// whether `name` was an alias.
    pub fn resolve(&self, name: &str) -> Result<(LxdImage, bool), ImageError> {
        // As LXD: any failure to read the alias (none, another type) means "not an alias".
        let target = self
            .alias(name)
            .ok()
            .filter(|a| matches!(a.kind.as_str(), "" | "container"))
            .map(|a| a.target);
        let image = self.image(target.as_deref().unwrap_or(name), "")?;
        Ok((image, target.is_some()))
    }

    fn alias(&self, name: &str) -> Result<AliasEntry, ImageError> {
        self.get_json(&format!("/1.0/images/aliases/{}", percent_encode(name)))
    }

    /// `GET /1.0/images/<fingerprint>` (a prefix will do), with `secret` when not empty (an
    /// image that is not public).
    pub fn image(&self, fingerprint: &str, secret: &str) -> Result<LxdImage, ImageError> {
        let path = with_secret(
            format!("/1.0/images/{}", percent_encode(fingerprint)),
            secret,
        );
        let mut image: LxdImage = self.get_json(&path)?;
        if image.kind.is_empty() {
            image.kind = "container".into();
        }
        Ok(image)
    }

    /// Opens the export of the image `fingerprint`. At most `limit` bytes are read of it (a
    /// server that sends more is refused), and `progress` hears how far it got.
    pub fn export(
        &self,
        fingerprint: &str,
        secret: &str,
        limit: u64,
        progress: ExportProgress,
    ) -> Result<LxdExport, ImageError> {
        let path = with_secret(
            format!("/1.0/images/{}/export", percent_encode(fingerprint)),
            secret,
        );
        let response = self.call(&path)?;
        let length = response
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let ctype = response.header("Content-Type").unwrap_or_default();
        let (kind, params) = parse_header_value(ctype);
        let disposition = response
            .header("Content-Disposition")
            .map(|v| parse_header_value(v).1)
            .unwrap_or_default();
        let body: Box<dyn Read + Send> = Box::new(Counted {
            inner: response.into_reader(),
            read: 0,
            length,
            limit,
            progress,
            server: self.base.clone(),
        });
        if kind == "multipart/form-data" {
            let boundary = params
                .into_iter()
                .find(|(k, _)| k == "boundary")
                .map(|(_, v)| v)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| self.invalid("multipart image export without a boundary"))?;
            return Ok(LxdExport::Split(MultipartReader::new(body, &boundary)));
        }
        let filename = disposition
            .into_iter()
            .find(|(k, _)| k == "filename")
            .map(|(_, v)| v)
            .ok_or_else(|| self.invalid("No filename in Content-Disposition header"))?;
        Ok(LxdExport::Unified { filename, body })
    }

    fn invalid(&self, message: &str) -> ImageError {
        ImageError::RemoteInvalid {
            server: self.base.clone(),
            message: message.to_string(),
        }
    }

    /// A GET whose failure says what the server said: its error message (404 is
    /// [`ImageError::RemoteNotFound`]), or why it could not be asked.
    fn call(&self, path: &str) -> Result<ureq::Response, ImageError> {
        match self.agent.get(&format!("{}{path}", self.base)).call() {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Envelope<serde_json::Value>>(&text)
                    .ok()
                    .map(|e| e.error)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| format!("HTTP status {code}"));
                if code == 404 {
                    Err(ImageError::RemoteNotFound(message))
                } else {
                    Err(self.invalid(&message))
                }
            }
            Err(ureq::Error::Transport(t)) => {
                // ureq's own text repeats the URL and its cause; the kind and the cause
                // say it once.
                let cause = match (std::error::Error::source(&t), t.message()) {
                    (Some(source), _) => source.to_string(),
                    (None, Some(message)) => message.to_string(),
                    (None, None) => String::new(),
                };
                Err(ImageError::Remote {
                    server: self.base.clone(),
                    what: strip_secret(path),
                    source: format!("{}: {cause}", t.kind()).into(),
                })
            }
        }
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ImageError> {
        let mut text = String::new();
        self.call(path)?
            .into_reader()
            .take(16 << 20)
            .read_to_string(&mut text)
            .map_err(|e| ImageError::Remote {
                server: self.base.clone(),
                what: strip_secret(path),
                source: Box::new(e),
            })?;
        let envelope: Envelope<T> = serde_json::from_str(&text)
            .map_err(|e| self.invalid(&format!("{}: {e}", strip_secret(path))))?;
        if envelope.kind != "sync" {
            return Err(self.invalid(&format!(
                "{}: a {:?} response where a sync one was expected",
                strip_secret(path),
                envelope.kind
            )));
        }
        envelope
            .metadata
            .ok_or_else(|| self.invalid(&format!("{}: no metadata", strip_secret(path))))
    }
}

/// The export's body: counted for progress, bounded by `limit`.
struct Counted {
    inner: Box<dyn Read + Send>,
    read: u64,
    length: Option<u64>,
    limit: u64,
    progress: ExportProgress,
    server: String,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: the image export is larger than the {} bytes the image has",
                    self.server, self.limit
                ),
            ));
        }
        if n > 0 {
            (self.progress)(self.read, self.length);
        } else if self.length.is_some_and(|l| self.read < l) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{}: the image export ended early", self.server),
            ));
        }
        Ok(n)
    }
}

fn with_secret(path: String, secret: &str) -> String {
    if secret.is_empty() {
        path
    } else {
        format!("{path}?secret={}", percent_encode(secret))
    }
}

/// A path fit for an error message: without the secret.
fn strip_secret(path: &str) -> String {
    path.split('?').next().unwrap_or_default().to_string()
}

/// LXD writes empty maps as `null`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_escaped_and_secrets_kept_out_of_messages() {
        assert_eq!(percent_encode("busybox/1.0"), "busybox%2F1.0");
        assert_eq!(percent_encode("a b?c"), "a%20b%3Fc");
        let p = with_secret("/1.0/images/abc".into(), "s3/cr+t");
        assert_eq!(p, "/1.0/images/abc?secret=s3%2Fcr%2Bt");
        assert_eq!(strip_secret(&p), "/1.0/images/abc");
    }

    #[test]
    fn images_parse_as_lxd_sends_them() {
        let text = r#"{"type":"sync","status":"Success","status_code":200,"metadata":{"fingerprint":"ab","architecture":"x86_64","type":"container","public":true,"size":12,"filename":"x.tar.xz","properties":null,"created_at":"2024-01-01T00:00:00Z","aliases":[]}}"#;
        let e: Envelope<LxdImage> = serde_json::from_str(text).unwrap();
        let image = e.metadata.unwrap();
        assert_eq!(image.fingerprint, "ab");
        assert!(image.public && image.properties.is_empty());
        assert_eq!(image.size, 12);
    }

    #[test]
    fn only_https_and_good_certificates_make_a_client() {
        assert!(LxdRemote::new("http://127.0.0.1:1", "").is_err());
        assert!(LxdRemote::new("https://127.0.0.1:1", "not a certificate").is_err());
        let ok = LxdRemote::new("https://127.0.0.1:1/", "").unwrap();
        assert_eq!(ok.base(), "https://127.0.0.1:1");
    }

    #[test]
    fn exports_are_bounded_and_short_ones_refused() {
        let mut c = Counted {
            inner: Box::new(&[1u8; 100][..]),
            read: 0,
            length: None,
            limit: 50,
            progress: Box::new(|_, _| {}),
            server: "s".into(),
        };
        assert!(std::io::copy(&mut c, &mut std::io::sink()).is_err());
        let mut c = Counted {
            inner: Box::new(&[1u8; 100][..]),
            read: 0,
            length: Some(200),
            limit: 1000,
            progress: Box::new(|_, _| {}),
            server: "s".into(),
        };
        let err = std::io::copy(&mut c, &mut std::io::sink()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
