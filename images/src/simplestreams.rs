//! The simplestreams client: reads a server's `streams/v1/index.json` and its products
//! files, turns them into images as LXD 5.0 does (meta item paired with each rootfs item,
//! `combined_*_sha256` fingerprints, aliases with the native architecture first), and
//! downloads an image's files with every byte hashed.
//!
//! CONTRACT (other modules are written against these names; keep them):
//! - [`SimpleStreams::new`], [`SimpleStreams::images`], [`SimpleStreams::resolve`],
//!   [`SimpleStreams::open`].
//! - [`RemoteImage`], [`RemoteFile`], [`host_architecture`].

use std::collections::BTreeMap;
use std::io::Read;

use crate::ImageError;

/// One file of a remote image, as the products file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Relative to the server's base URL.
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The item's `ftype`: `lxd.tar.xz`, `squashfs`, `root.tar.xz`, `lxd_combined.tar.gz`.
    pub ftype: String,
}

/// One image a simplestreams server offers, shaped as LXD shapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// sha256 of the meta file followed by the rootfs (or of the unified file).
    pub fingerprint: String,
    /// LXD's name: `x86_64`, `aarch64`.
    pub architecture: String,
    /// `container` (disk images, `virtual-machine`, are listed but never pulled).
    pub kind: String,
    /// Every alias that resolves to this image on this server (`debian/12`,
    /// `debian/12/amd64`, ...), in the order LXD registers them.
    pub aliases: Vec<String>,
    /// `os`, `release`, `version`, `architecture` (`amd64`), `label`, `serial`, `variant`,
    /// `type` (the rootfs ftype), `description`.
    pub properties: BTreeMap<String, String>,
    /// RFC 3339, from the version key's `YYYYMMDD`.
    pub created_at: String,
    /// meta plus rootfs.
    pub size: u64,
    /// The meta file's base name (`lxd.tar.xz`).
    pub filename: String,
    /// The metadata tarball (split images) or the unified tarball.
    pub meta: RemoteFile,
    /// The rootfs of a split image; `None` for a unified one.
    pub rootfs: Option<RemoteFile>,
}

/// The host's architecture as LXD names it (`x86_64`, `aarch64`).
pub fn host_architecture() -> String {
    std::env::consts::ARCH.to_string()
}

/// A simplestreams server at a base URL (`https://images.linuxcontainers.org`). HTTPS is
/// verified against the system's CA store, `SSL_CERT_FILE` and `SSL_CERT_DIR` honoured.
#[derive(Debug, Clone)]
pub struct SimpleStreams {
    base: String,
}

impl SimpleStreams {
    /// A client for the server at `base` (`https://` or `http://`).
    pub fn new(base: &str) -> Result<Self, ImageError> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Every image the server offers (fetches the index and the products files).
    pub fn images(&self) -> Result<Vec<RemoteImage>, ImageError> {
        todo!("simplestreams: images")
    }

    /// The image `name` names: an alias first (native architecture first), then a
    /// fingerprint prefix. Errors as LXD's: `The requested image couldn't be found`,
    /// `More than one match for the provided partial fingerprint`.
    pub fn resolve(&self, name: &str) -> Result<RemoteImage, ImageError> {
        let _ = name;
        todo!("simplestreams: resolve")
    }

    /// Opens one file of an image for reading. The reader checks what it yields against
    /// `file.sha256` and `file.size`: at the end of the stream, a mismatch or a short body is
    /// an `io::Error` of kind `InvalidData` naming the server and the path, so a consumer
    /// (an unpacker fed from it) fails before anything is kept. `progress` is called with
    /// the bytes read so far.
    pub fn open(
        &self,
        file: &RemoteFile,
        progress: Box<dyn FnMut(u64) + Send>,
    ) -> Result<Box<dyn Read + Send>, ImageError> {
        let _ = (file, progress);
        todo!("simplestreams: open")
    }
}
