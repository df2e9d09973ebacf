//! Image formats: LXD's unified image tarballs, their metadata.yaml, fingerprints, and
//! safe unpacking (no path escapes, no device nodes for unprivileged use, bounded size).

mod pack;
mod unpack;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use pack::{pack_unified, Compression};
pub use unpack::{read_split_metadata, unpack_split_rootfs, unpack_unified, UnpackLimits};

/// Every image error, naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image: {0}")]
    Invalid(String),
    #[error("image is larger than the {limit} bytes allowed")]
    TooLarge { limit: u64 },
}

/// What kind of failure an [`ImageError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidInput,
    AlreadyExists,
    InUse,
    Unsupported,
    Internal,
}

impl ImageError {
    /// Bad or oversized images are the sender's fault; I/O failures are the host's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::Invalid(_) | ImageError::TooLarge { .. } => ErrorKind::InvalidInput,
            ImageError::Io { .. } => ErrorKind::Internal,
        }
    }

    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// metadata.yaml of an image.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ImageMetadata {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub creation_date: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expiry_date: i64,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl ImageMetadata {
    /// Parses metadata.yaml; `architecture` and `creation_date` are required.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let meta: ImageMetadata = serde_yaml::from_str(text)
            .map_err(|e| ImageError::Invalid(format!("metadata.yaml: {e}")))?;
        if meta.architecture.is_empty() {
            return Err(ImageError::Invalid(
                "metadata.yaml has no architecture".into(),
            ));
        }
        Ok(meta)
    }

    /// The LXD architecture name (`amd64` becomes `x86_64`).
    pub fn lxd_architecture(&self) -> String {
        match self.architecture.as_str() {
            "amd64" | "x86_64" => "x86_64",
            "arm64" | "aarch64" => "aarch64",
            "i386" | "i686" => "i686",
            other => other,
        }
        .to_string()
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The sha256 of a file, as LXD fingerprints a unified image.
pub fn fingerprint_file(path: &Path) -> Result<String, ImageError> {
    let mut f = std::fs::File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| ImageError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses_and_maps_architectures() {
        let m = ImageMetadata::parse("architecture: amd64\ncreation_date: 1700000000\nproperties:\n  os: Debian\n  release: bookworm\n").unwrap();
        assert_eq!(m.lxd_architecture(), "x86_64");
        assert_eq!(m.properties["os"], "Debian");
        assert!(ImageMetadata::parse("creation_date: 1\n").is_err());
        assert!(ImageMetadata::parse(": : :").is_err());
    }
}
