//! The `dir` driver: volumes are plain directories; clones are copies (reflinked where the
//! filesystem has them).

use std::path::{Path, PathBuf};

use crate::copy::StopCheck;
use crate::driver::{in_parent, DriverInfo, StorageDriver};
use crate::error::StorageError;

/// What a `dir` pool can do.
pub(crate) const INFO: DriverInfo = DriverInfo {
    name: "dir",
    instant_clone: false,
    atomic_snapshots: false,
    quotas: false,
};

#[derive(Debug)]
pub struct DirDriver {
    root: PathBuf,
}

impl DirDriver {
    pub fn new(root: &Path) -> Self {
        DirDriver {
            root: root.to_path_buf(),
        }
    }
}

impl StorageDriver for DirDriver {
    fn info(&self) -> DriverInfo {
        INFO
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn create_volume(&self, vol: &Path) -> Result<(), StorageError> {
        let p = self.path(vol);
        in_parent(&p, || {
            std::fs::create_dir(&p).map_err(|e| StorageError::io("create volume", &p, e))
        })
    }

    fn clone_volume(&self, from: &Path, to: &Path, readonly: bool) -> Result<(), StorageError> {
        self.clone_volume_until(from, to, readonly, &crate::copy::never)
    }

    fn clone_volume_until(
        &self,
        from: &Path,
        to: &Path,
        _readonly: bool,
        stop: StopCheck,
    ) -> Result<(), StorageError> {
        let dst = self.path(to);
        in_parent(&dst, || self.copy_into_place(from, &dst, stop))
    }

    fn delete_volume(&self, vol: &Path) -> Result<(), StorageError> {
        let p = self.path(vol);
        match std::fs::remove_dir_all(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::io("delete volume", &p, e))
            }
            _ => Ok(()),
        }
    }

    fn set_readonly(&self, _vol: &Path, _readonly: bool) -> Result<(), StorageError> {
        // Plain directories have no read-only switch that root would respect.
        Ok(())
    }
}

impl DirDriver {
    /// Copies volume `from` to `dst` under a temporary name, so a failure never leaves a
    /// half volume in place.
    fn copy_into_place(
        &self,
        from: &Path,
        dst: &Path,
        stop: StopCheck,
    ) -> Result<(), StorageError> {
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dst.with_file_name(format!(".{name}.copying"));
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(e) = crate::copy::clone_tree_until(&self.path(from), &tmp, stop) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, dst).map_err(|e| StorageError::io("rename into place", dst, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_clone_restore_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let d = DirDriver::new(dir.path());
        d.create_volume(Path::new("images/abc")).unwrap();
        std::fs::write(d.path(Path::new("images/abc/f")), b"1").unwrap();
        d.clone_volume(Path::new("images/abc"), Path::new("containers/c1"), false)
            .unwrap();
        d.clone_volume(
            Path::new("containers/c1"),
            Path::new("containers-snapshots/c1/s0"),
            true,
        )
        .unwrap();
        std::fs::write(d.path(Path::new("containers/c1/f")), b"2").unwrap();
        d.restore(
            Path::new("containers/c1"),
            Path::new("containers-snapshots/c1/s0"),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(d.path(Path::new("containers/c1/f"))).unwrap(),
            b"1"
        );
        assert!(!d.path(Path::new("containers/.c1.old")).exists());
        d.delete_volume(Path::new("containers/c1")).unwrap();
        d.delete_volume(Path::new("containers/c1")).unwrap();
        assert!(!d.path(Path::new("containers/c1")).exists());
    }
}
