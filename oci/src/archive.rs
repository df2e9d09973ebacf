//! An archive on disk as a [`BlobSource`]: the tar is indexed once (name → offset and
//! size of each regular file) and files are read by seeking, never extracted.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::image::BlobSource;
use crate::OciError;

/// A tarball holding an OCI image layout or a `docker save` image.
pub struct ArchiveSource {
    path: PathBuf,
    files: BTreeMap<String, (u64, u64)>,
}

impl ArchiveSource {
    /// Indexes the uncompressed tarball `path`.
    pub fn open(path: &Path) -> Result<Self, OciError> {
        let file = File::open(path).map_err(|e| OciError::io("open", path, e))?;
        let mut magic = [0u8; 4];
        let n = (&file)
            .take(4)
            .read(&mut magic)
            .map_err(|e| OciError::io("read", path, e))?;
        if n >= 2 && (magic[..2] == [0x1f, 0x8b] || magic[..4] == [0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(OciError::invalid(
                path.display().to_string(),
                "the archive is compressed; an OCI or docker-save archive is a plain tar",
            ));
        }
        (&file)
            .seek(SeekFrom::Start(0))
            .map_err(|e| OciError::io("read", path, e))?;
        let mut archive = tar::Archive::new(&file);
        let mut files = BTreeMap::new();
        let entries = archive
            .entries()
            .map_err(|e| OciError::io("read", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| OciError::io("read", path, e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Ok(name) = entry.path() else { continue };
            let Some(name) = clean_name(&name) else {
                continue;
            };
            files.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(ArchiveSource {
            path: path.to_path_buf(),
            files,
        })
    }
}

/// `a/./b` as `a/b`; names with `..` or a root are never looked up.
fn clean_name(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

impl BlobSource for ArchiveSource {
    fn exists(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + '_>, OciError> {
        let &(offset, size) = self
            .files
            .get(name)
            .ok_or_else(|| OciError::Missing(name.to_string()))?;
        let mut f = File::open(&self.path).map_err(|e| OciError::io("open", &self.path, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| OciError::io("read", &self.path, e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            f.take(size),
        )))
    }
}

/// An uncompressed tar with `oci-layout` or `manifest.json` at its top and no
/// `metadata.yaml` (which would make it an LXD image). Every image upload asks: an LXD
/// image is known at its first `metadata.yaml`, `rootfs/` or `templates/` entry, without
/// reading the rest of its headers.
pub(crate) fn looks_like_oci(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let Ok(entries) = archive.entries() else {
        return false;
    };
    let mut layout = false;
    for entry in entries {
        // Not a tar (a compressed upload): not an OCI archive.
        let Ok(entry) = entry else { return false };
        let Some(name) = entry.path().ok().and_then(|p| clean_name(&p)) else {
            continue;
        };
        let top = name.split('/').next().unwrap_or_default();
        match top {
            "metadata.yaml" | "rootfs" | "templates" => return false,
            "oci-layout" | "manifest.json" => layout = true,
            _ => {}
        }
    }
    layout
}
