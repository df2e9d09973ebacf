//! Mounting pools (loop files, block devices, bind mounts of directories) behind a trait, so
//! the pool lifecycle is tested without root; the fake keeps its mount table in memory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::StorageError;

/// The mounts a pool needs.
pub trait Mounter: Send + Sync + std::fmt::Debug {
    /// Attaches `file` to a free loop device and mounts it as `fstype` at `target`, with
    /// `data` as the filesystem's options.
    fn mount_loop(
        &self,
        file: &Path,
        target: &Path,
        fstype: &str,
        data: &str,
    ) -> Result<(), StorageError>;
    /// Mounts block device `dev` as `fstype` at `target`.
    fn mount_device(
        &self,
        dev: &Path,
        target: &Path,
        fstype: &str,
        data: &str,
    ) -> Result<(), StorageError>;
    /// Bind-mounts directory `source` at `target`.
    fn bind(&self, source: &Path, target: &Path) -> Result<(), StorageError>;
    /// Detaches the mount at `target` (lazily: a pool still busy goes all the same).
    fn unmount(&self, target: &Path) -> Result<(), StorageError>;
    /// Whether `path` is the mount point of a mount.
    fn is_mount_point(&self, path: &Path) -> bool;
    /// Whether the kernel has filesystem type `fstype` (loaded, or built in).
    fn has_filesystem(&self, fstype: &str) -> bool;
}

/// The real one: mount(2), the loop ioctls, `/proc/self/mountinfo`, `/proc/filesystems`.
#[derive(Debug, Default)]
pub struct SystemMounter;

impl Mounter for SystemMounter {
    fn mount_loop(
        &self,
        file: &Path,
        target: &Path,
        fstype: &str,
        data: &str,
    ) -> Result<(), StorageError> {
        crate::loopdev::mount_loop(file, target, fstype, data)
    }

    fn mount_device(
        &self,
        dev: &Path,
        target: &Path,
        fstype: &str,
        data: &str,
    ) -> Result<(), StorageError> {
        mount(
            Some(dev),
            target,
            Some(fstype),
            MsFlags::MS_NOATIME,
            Some(data),
        )
        .map_err(|source| StorageError::Sys {
            action: format!("mount {} on {}", dev.display(), target.display()),
            source,
        })
    }

    fn bind(&self, source: &Path, target: &Path) -> Result<(), StorageError> {
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| StorageError::Sys {
            action: format!("bind-mount {} at {}", source.display(), target.display()),
            source: e,
        })
    }

    fn unmount(&self, target: &Path) -> Result<(), StorageError> {
        match umount2(target, MntFlags::MNT_DETACH) {
            // Not a mount point (EINVAL) or not there at all: nothing to undo.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(source) => Err(StorageError::Sys {
                action: format!("unmount {}", target.display()),
                source,
            }),
        }
    }

    fn is_mount_point(&self, path: &Path) -> bool {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let want = path.to_string_lossy();
        text.lines()
            .any(|l| l.split_whitespace().nth(4).is_some_and(|m| m == want))
    }

    fn has_filesystem(&self, fstype: &str) -> bool {
        std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some(fstype))
        }) || Path::new("/sys/module").join(fstype).exists()
    }
}

/// A mount table in memory. Records each call as a line; can fail its Nth call (from 1).
#[derive(Debug, Default)]
pub struct FakeMounter {
    pub calls: Mutex<Vec<String>>,
    pub mounted: Mutex<BTreeSet<PathBuf>>,
    pub fail_nth: Mutex<Option<usize>>,
    /// Filesystem types the fake kernel has.
    pub filesystems: Mutex<Vec<String>>,
}

impl FakeMounter {
    /// A fake whose kernel has these filesystem types.
    pub fn with_filesystems(types: &[&str]) -> Self {
        FakeMounter {
            filesystems: Mutex::new(types.iter().map(|t| t.to_string()).collect()),
            ..Default::default()
        }
    }

    fn record(&self, line: String) -> Result<(), StorageError> {
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.push(line.clone());
            calls.len()
        };
        if *self.fail_nth.lock().unwrap_or_else(|e| e.into_inner()) == Some(n) {
            return Err(StorageError::Sys {
                action: line,
                source: nix::errno::Errno::EIO,
            });
        }
        Ok(())
    }

    fn mount_at(&self, line: String, target: &Path) -> Result<(), StorageError> {
        self.record(line)?;
        self.mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target.to_path_buf());
        Ok(())
    }
}

impl Mounter for FakeMounter {
    fn mount_loop(
        &self,
        file: &Path,
        target: &Path,
        fstype: &str,
        _data: &str,
    ) -> Result<(), StorageError> {
        let line = format!("loop {fstype} {} {}", file.display(), target.display());
        self.mount_at(line, target)
    }

    fn mount_device(
        &self,
        dev: &Path,
        target: &Path,
        fstype: &str,
        _data: &str,
    ) -> Result<(), StorageError> {
        let line = format!("mount {fstype} {} {}", dev.display(), target.display());
        self.mount_at(line, target)
    }

    fn bind(&self, source: &Path, target: &Path) -> Result<(), StorageError> {
        let line = format!("bind {} {}", source.display(), target.display());
        self.mount_at(line, target)
    }

    fn unmount(&self, target: &Path) -> Result<(), StorageError> {
        self.record(format!("unmount {}", target.display()))?;
        self.mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(target);
        Ok(())
    }

    fn is_mount_point(&self, path: &Path) -> bool {
        self.mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(path)
    }

    fn has_filesystem(&self, fstype: &str) -> bool {
        self.filesystems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|t| t == fstype)
    }
}
