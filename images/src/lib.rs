//! Image formats: LXD's unified image tarballs, their metadata.yaml, fingerprints, and
//! safe unpacking (no path escapes, no device nodes for unprivileged use, bounded size), and
//! the clients of image servers (simplestreams, LXD protocol).

pub mod builder;
mod http;
pub mod lxd_remote;
pub mod multipart;
mod pack;
pub mod simplestreams;
pub mod streams_tree;
pub mod template;
mod unpack;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use pack::{pack_unified, pack_unified_with_templates, Compression};
pub use unpack::{
    read_split_metadata, unpack_split_metadata, unpack_split_rootfs, unpack_split_rootfs_stream,
    unpack_squashfs_until, unpack_unified, unpack_unified_volume, unpack_unified_volume_from,
    UnpackLimits,
};

/// The extension LXD gives an image file, told by its first bytes as LXD's
/// `DetectCompression` tells it (`.tar.gz`, `.tar.xz`, `.squashfs`...); empty when unknown.
pub fn extension_of(header: &[u8]) -> &'static str {
    let at = |r: std::ops::Range<usize>| header.get(r);
    if at(0..2) == Some(b"BZ") {
        ".tar.bz2"
    } else if at(0..2) == Some(&[0x1f, 0x8b]) {
        ".tar.gz"
    } else if at(1..5) == Some(b"7zXZ") {
        if header[0] == 0xfd {
            ".tar.xz"
        } else {
            ".tar.lzma"
        }
    } else if at(0..3) == Some(&[0x5d, 0, 0]) {
        ".tar.lzma"
    } else if at(257..262) == Some(b"ustar") {
        ".tar"
    } else if at(0..4) == Some(b"hsqs") {
        ".squashfs"
    } else if at(0..3) == Some(b"QFI") {
        ".qcow2"
    } else if at(0..4) == Some(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ".tar.zst"
    } else {
        ""
    }
}

/// [`extension_of`] a file's first bytes; the file is rewound.
pub fn detect_extension<F: Read + std::io::Seek>(file: &mut F) -> std::io::Result<&'static str> {
    let mut header = Vec::with_capacity(263);
    file.by_ref().take(263).read_to_end(&mut header)?;
    file.rewind()?;
    Ok(extension_of(&header))
}

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
    /// A request to an image server failed: `what` is the URL path or item asked for.
    #[error("{server}: failed to get {what}")]
    Remote {
        server: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An image server's answer that cannot be used (bad JSON, no such image...).
    #[error("{server}: {message}")]
    RemoteInvalid { server: String, message: String },
    /// No image on the server matches (LXD's messages).
    #[error("{0}")]
    RemoteNotFound(String),
    /// A format whose unpacking needs a tool this host lacks.
    #[error("{format} root filesystems need {tool} (package {package}), which is not installed on this host")]
    MissingTool {
        format: &'static str,
        tool: &'static str,
        package: &'static str,
    },
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
            ImageError::MissingTool { .. } => ErrorKind::Unsupported,
            ImageError::RemoteNotFound(_) => ErrorKind::NotFound,
            ImageError::Remote { .. } | ImageError::RemoteInvalid { .. } => ErrorKind::Internal,
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
    #[serde(default, deserialize_with = "null_as_default")]
    pub properties: BTreeMap<String, String>,
    /// Files rendered into an instance's root filesystem, by absolute path.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub templates: BTreeMap<String, Template>,
}

/// One entry of metadata.yaml's `templates`: when a file is rendered, and from what.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Template {
    /// Triggers: `create`, `copy`, `rename`, `start`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub when: Vec<String>,
    /// Leave a file that already exists alone.
    #[serde(default)]
    pub create_only: bool,
    /// The template's file name in `templates/`.
    #[serde(default)]
    pub template: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub properties: BTreeMap<String, String>,
}

/// LXD writes empty maps and lists as `null` (Go's nil); they read as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
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

    #[test]
    fn metadata_templates_parse_and_stay_out_when_empty() {
        let text = "architecture: x86_64\ncreation_date: 1\ntemplates:\n  /etc/hostname:\n    when:\n    - create\n    - copy\n    template: hostname.tpl\n  /etc/motd:\n    when: [start]\n    create_only: true\n    template: motd.tpl\n    properties:\n      default: hi\n";
        let m = ImageMetadata::parse(text).unwrap();
        assert_eq!(m.templates["/etc/hostname"].when, ["create", "copy"]);
        assert_eq!(m.templates["/etc/hostname"].template, "hostname.tpl");
        assert!(!m.templates["/etc/hostname"].create_only);
        assert!(m.templates["/etc/motd"].create_only);
        assert_eq!(m.templates["/etc/motd"].properties["default"], "hi");
        let again = ImageMetadata::parse(&serde_yaml::to_string(&m).unwrap()).unwrap();
        assert_eq!(again, m);
        let nulls = ImageMetadata::parse("architecture: x86_64\ncreation_date: 1\nproperties: null\ntemplates:\n  /a:\n    when: null\n    properties: null\n").unwrap();
        assert!(nulls.properties.is_empty() && nulls.templates["/a"].when.is_empty());
        let plain = ImageMetadata::parse("architecture: x86_64\ncreation_date: 1\n").unwrap();
        assert!(!serde_yaml::to_string(&plain).unwrap().contains("templates"));
    }

    #[test]
    fn extensions_follow_lxd() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        for (header, ext) in [
            (&[0x1f, 0x8b, 8, 0][..], ".tar.gz"),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], ".tar.xz"),
            (b"hsqs\x04\0\0\0", ".squashfs"),
            (&[0x28, 0xb5, 0x2f, 0xfd], ".tar.zst"),
            (b"BZh9", ".tar.bz2"),
            (&tar, ".tar"),
            (b"garbage", ""),
            (b"", ""),
        ] {
            assert_eq!(extension_of(header), ext, "{header:?}");
        }
        let mut f = std::io::Cursor::new(b"hsqs and more".to_vec());
        assert_eq!(detect_extension(&mut f).unwrap(), ".squashfs");
        assert_eq!(f.position(), 0);
    }
}
