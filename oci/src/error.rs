//! Errors of reading and flattening OCI images.

use std::path::PathBuf;

/// What went wrong reading or flattening an OCI image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("failed to {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the archive has no {0}")]
    Missing(String),
    #[error("invalid {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("digest mismatch for {digest}: the content hashes to sha256:{actual}")]
    DigestMismatch { digest: String, actual: String },
    #[error("unsupported digest {0} (only sha256 is supported)")]
    UnsupportedDigest(String),
    #[error("no image for {wanted} in the archive (it has: {have})")]
    WrongPlatform { wanted: String, have: String },
    #[error("layer entry {0} escapes the root filesystem")]
    Escape(String),
    #[error("layer entry {path} passes through the symlink {link}")]
    ThroughSymlink { path: String, link: String },
    #[error("the image unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("user {0:?} is not in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} is not in the image's /etc/group")]
    UnknownGroup(String),
}

impl OciError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OciError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        OciError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
