//! The one trait every storage driver implements. Volumes are named by their path relative
//! to the pool's mount point (`images/<fp>`, `containers/<name>`,
//! `containers-snapshots/<name>/<snap>`), so the daemon's layout is the same on every driver.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StorageError;
use crate::runner::CommandRunner;

/// What a driver can do; callers branch on these, never on the driver's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverInfo {
    pub name: &'static str,
    /// Clones and snapshots share data and cost about the same whatever the size.
    pub instant_clone: bool,
    /// Snapshots of a running volume are consistent without freezing it.
    pub atomic_snapshots: bool,
    /// Volumes can be limited in size.
    pub quotas: bool,
}

pub trait StorageDriver: Send + Sync + std::fmt::Debug {
    fn info(&self) -> DriverInfo;
    /// The pool's mount point.
    fn root(&self) -> &Path;
    /// An empty volume.
    fn create_volume(&self, vol: &Path) -> Result<(), StorageError>;
    /// A new volume `to` with the content of `from` (snapshot or copy); read-only if asked.
    fn clone_volume(&self, from: &Path, to: &Path, readonly: bool) -> Result<(), StorageError>;
    /// Removes a volume; a missing one is fine.
    fn delete_volume(&self, vol: &Path) -> Result<(), StorageError>;
    /// Makes a volume read-only (image volumes) or writable again.
    fn set_readonly(&self, vol: &Path, readonly: bool) -> Result<(), StorageError>;

    /// Renames a volume (a plain rename on dir and btrfs; zfs renames the dataset).
    fn rename_volume(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        std::fs::rename(self.path(from), self.path(to))
            .map_err(|e| StorageError::io("rename", self.path(from), e))
    }

    /// Limits a volume to `bytes` (`None` lifts the limit). Drivers without quotas refuse.
    fn set_quota(&self, vol: &Path, bytes: Option<u64>) -> Result<(), StorageError> {
        let _ = (vol, bytes);
        Err(StorageError::Unsupported(format!(
            "{} pools cannot limit the size of a volume",
            self.info().name
        )))
    }

    /// Full path of a volume.
    fn path(&self, vol: &Path) -> PathBuf {
        self.root().join(vol)
    }

    /// Replaces `vol` with the content of `snapshot`: clone aside, then swap by renames,
    /// so a failure leaves the original in place.
    fn restore(&self, vol: &Path, snapshot: &Path) -> Result<(), StorageError> {
        let name = vol
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fresh = vol.with_file_name(format!(".{name}.restoring"));
        let old = vol.with_file_name(format!(".{name}.old"));
        let _ = self.delete_volume(&fresh);
        let _ = self.delete_volume(&old);
        self.clone_volume(snapshot, &fresh, false)?;
        self.rename_volume(vol, &old)?;
        if let Err(e) = self.rename_volume(&fresh, vol) {
            let _ = self.rename_volume(&old, vol);
            return Err(e);
        }
        self.delete_volume(&old)
    }
}

/// The one place driver names are matched. A zfs pool is named `zfs:<dataset>`, the
/// dataset below which its volumes live.
pub fn open_driver(
    name: &str,
    root: &Path,
    runner: Arc<dyn CommandRunner>,
) -> Result<Box<dyn StorageDriver>, StorageError> {
    match name {
        "dir" => Ok(Box::new(crate::dir::DirDriver::new(root))),
        "btrfs" => Ok(Box::new(crate::btrfs::BtrfsDriver::new(root, runner))),
        name if name.starts_with("zfs:") => Ok(Box::new(crate::zfs::ZfsDriver::new(
            root,
            &name[4..],
            runner,
        ))),
        other => Err(StorageError::UnknownDriver(other.to_string())),
    }
}

/// Copies volume `from` of pool `src` into a new volume `to` of pool `dst` (another pool,
/// perhaps of another driver): a fresh volume filled by a file copy (reflinked where the
/// filesystems allow) under a temporary name, renamed into place when complete, so a
/// failure leaves nothing that looks whole.
pub fn copy_volume_across(
    src: &dyn StorageDriver,
    from: &Path,
    dst: &dyn StorageDriver,
    to: &Path,
    readonly: bool,
) -> Result<(), StorageError> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = to.with_file_name(format!(".{name}.copying"));
    let _ = dst.delete_volume(&staging);
    if let Some(parent) = dst.path(&staging).parent() {
        std::fs::create_dir_all(parent).map_err(|e| StorageError::io("create", parent, e))?;
    }
    let copied = (|| {
        dst.create_volume(&staging)?;
        let from_path = src.path(from);
        let entries =
            std::fs::read_dir(&from_path).map_err(|e| StorageError::io("read", &from_path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("read", &from_path, e))?;
            crate::copy::clone_tree(&entry.path(), &dst.path(&staging).join(entry.file_name()))?;
        }
        dst.rename_volume(&staging, to)?;
        if readonly {
            dst.set_readonly(to, true)?;
        }
        Ok(())
    })();
    if copied.is_err() {
        let _ = dst.delete_volume(&staging);
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DirDriver;

    #[test]
    fn volumes_are_copied_across_pools_whole_or_not_at_all() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, dst) = (DirDriver::new(a.path()), DirDriver::new(b.path()));
        let vol = Path::new("containers/c1");
        std::fs::create_dir_all(src.path(vol).join("rootfs/etc")).unwrap();
        std::fs::write(src.path(vol).join("rootfs/etc/hostname"), "c1\n").unwrap();
        copy_volume_across(&src, vol, &dst, vol, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path(vol).join("rootfs/etc/hostname")).unwrap(),
            "c1\n"
        );
        // A source that is missing fails and leaves nothing on the target.
        let missing = Path::new("containers/none");
        assert!(copy_volume_across(&src, missing, &dst, missing, false).is_err());
        assert!(!dst.path(missing).exists());
        assert!(!dst.path(Path::new("containers/.none.copying")).exists());
    }
}
