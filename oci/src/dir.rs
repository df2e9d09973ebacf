//! An OCI image layout in a directory as a [`BlobSource`]: what a registry pull writes
//! (`index.json`, `blobs/sha256/<hex>`), read back by name.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::image::BlobSource;
use crate::OciError;

/// A directory holding an OCI image layout.
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: &Path) -> Self {
        DirSource {
            root: root.to_path_buf(),
        }
    }

    /// The file `name` of the layout; names with `..` or a root are never looked up.
    fn path(&self, name: &str) -> Option<PathBuf> {
        let rel = Path::new(name);
        rel.components()
            .all(|c| matches!(c, Component::Normal(_)))
            .then(|| self.root.join(rel))
    }
}

impl BlobSource for DirSource {
    fn exists(&self, name: &str) -> bool {
        self.path(name).is_some_and(|p| p.is_file())
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + '_>, OciError> {
        let path = self
            .path(name)
            .ok_or_else(|| OciError::Missing(name.to_string()))?;
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OciError::Missing(name.to_string()),
            _ => OciError::io("open", &path, e),
        })?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_layout_are_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.json"), "{}").unwrap();
        let source = DirSource::new(dir.path());
        assert!(source.exists("index.json"));
        assert!(!source.exists("../index.json"));
        assert!(!source.exists("/etc/passwd"));
        assert!(source.open("blobs/sha256/00").is_err());
    }
}
