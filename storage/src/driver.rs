//! The one trait every storage driver implements. Volumes are named by their path relative
//! to the pool's mount point (`images/<fp>`, `containers/<name>`,
//! `containers-snapshots/<name>/<snap>`), so the daemon's layout is the same on every driver.

use std::path::{Path, PathBuf};

use crate::copy::StopCheck;
use crate::error::StorageError;
use crate::usage::{filesystem_usage, tree_usage, PoolUsage};

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

    /// [`clone_volume`](Self::clone_volume) that a driver which copies stops (and undoes)
    /// once `stop` says so; an instant clone has nothing to stop.
    fn clone_volume_until(
        &self,
        from: &Path,
        to: &Path,
        readonly: bool,
        stop: StopCheck,
    ) -> Result<(), StorageError> {
        let _ = stop;
        self.clone_volume(from, to, readonly)
    }
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
        Err(StorageError::Unsupported {
            driver: self.info().name,
            action: "limit the size of a volume",
        })
    }

    /// Space and inodes of the pool (the filesystem mounted at its root).
    fn pool_usage(&self) -> Result<PoolUsage, StorageError> {
        filesystem_usage(self.root())
    }

    /// Bytes a volume uses (its allocated blocks, hard links once). A missing volume is
    /// an error, so a caller never reports a size for what is not there.
    fn volume_usage(&self, vol: &Path) -> Result<u64, StorageError> {
        let p = self.path(vol);
        std::fs::symlink_metadata(&p).map_err(|e| StorageError::io("stat", &p, e))?;
        Ok(tree_usage(&p))
    }

    /// The command that writes volume `vol` (read-only) as a stream on its stdout,
    /// incremental on `parent` when given, for a peer of the same driver: `btrfs send`.
    /// `None`: the driver has no such stream and volumes travel as files (rsync).
    fn send_argv(&self, vol: &Path, parent: Option<&Path>) -> Option<Vec<String>> {
        let _ = (vol, parent);
        None
    }

    /// The command that makes a volume inside directory `into` (relative to the pool)
    /// from a [`send_argv`](Self::send_argv) stream on its stdin: `btrfs receive`.
    fn receive_argv(&self, into: &Path) -> Option<Vec<String>> {
        let _ = into;
        None
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
        if let Err(e) = self.rename_volume(vol, &old) {
            let _ = self.delete_volume(&fresh);
            return Err(e);
        }
        if let Err(e) = self.rename_volume(&fresh, vol) {
            let _ = self.rename_volume(&old, vol);
            let _ = self.delete_volume(&fresh);
            return Err(e);
        }
        // Restored; an old copy left by a failure here is removed by the next restore.
        self.delete_volume(&old)
    }
}

/// Runs `make`, which makes `path`, after making the directories above it that are
/// missing; a failure removes those directories again, so nothing is left behind.
pub(crate) fn in_parent<T>(
    path: &Path,
    make: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let missing: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StorageError::io("create", parent, e))?;
    }
    let made = make();
    if made.is_err() {
        for dir in missing {
            let _ = std::fs::remove_dir(dir);
        }
    }
    made
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
    copy_volume_across_until(src, from, dst, to, readonly, &crate::copy::never)
}

/// [`copy_volume_across`], stopped (and undone) once `stop` says so.
pub fn copy_volume_across_until(
    src: &dyn StorageDriver,
    from: &Path,
    dst: &dyn StorageDriver,
    to: &Path,
    readonly: bool,
    stop: StopCheck,
) -> Result<(), StorageError> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = to.with_file_name(format!(".{name}.copying"));
    let _ = dst.delete_volume(&staging);
    in_parent(&dst.path(&staging), || {
        let filled = (|| {
            dst.create_volume(&staging)?;
            let from_path = src.path(from);
            let entries = std::fs::read_dir(&from_path)
                .map_err(|e| StorageError::io("read", &from_path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::io("read", &from_path, e))?;
                let into = dst.path(&staging).join(entry.file_name());
                crate::copy::clone_tree_until(&entry.path(), &into, stop)?;
            }
            if readonly {
                dst.set_readonly(&staging, true)?;
            }
            Ok(())
        })();
        let done = filled.and_then(|()| dst.rename_volume(&staging, to));
        if done.is_err() {
            let _ = dst.delete_volume(&staging);
        }
        done
    })
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
