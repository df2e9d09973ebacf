//! Pools: what backs them (a directory, a loop file, a block device, a zpool or an existing
//! dataset), made, mounted, unmounted and destroyed by a [`PoolHost`]. Each driver's pool
//! side is a [`PoolDriver`]; [`lookup`] is the one place a driver's name is matched.

mod btrfs;
mod dir;
mod zfs;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::driver::{DriverInfo, StorageDriver};
use crate::error::StorageError;
use crate::mounts::{Mounter, SystemMounter};
use crate::runner::{CommandRunner, SystemRunner};

/// A pool as the daemon records it. `driver` is `dir`, `btrfs`, or `zfs:<dataset>` (the
/// dataset below which its volumes live); `config` holds `source` (the directory, device,
/// loop file or dataset), `size` of a loop file, `zfs.pool_name`, and the user's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRecord {
    pub name: String,
    pub driver: String,
    pub config: BTreeMap<String, String>,
}

/// A pool to make: `driver` is `dir`, `btrfs` or `zfs`; `config` as the user gave it
/// (checked by the caller); `size` of a loop file to make (else a fifth of the free space,
/// between 5 and 30 GiB, as LXD does).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPool {
    pub name: String,
    pub driver: String,
    pub config: BTreeMap<String, String>,
    pub size: Option<u64>,
}

/// The pool side of a driver: how its backing store is made, mounted and removed.
pub(crate) trait PoolDriver: Sync {
    fn info(&self) -> DriverInfo;
    /// Checks `new`'s source and makes the backing store; returns the record to keep.
    /// Nothing is mounted yet; a failure leaves nothing made.
    fn create(&self, host: &PoolHost, new: &NewPool) -> Result<PoolRecord, StorageError>;
    /// Makes the backing store of `rec` reachable at `root`, an existing directory
    /// (mount, bind or import); done already is fine.
    fn mount(&self, host: &PoolHost, rec: &PoolRecord, root: &Path) -> Result<(), StorageError>;
    /// Removes what [`PoolDriver::create`] made, once the pool is unmounted; what is gone
    /// already is fine. A source of the user's (a directory, a device, a dataset) stays.
    fn destroy(&self, host: &PoolHost, rec: &PoolRecord) -> Result<(), StorageError>;
    /// The volume driver of a pool recorded with `driver`, mounted at `root`.
    fn volumes(
        &self,
        driver: &str,
        root: &Path,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<Box<dyn StorageDriver>, StorageError>;
}

/// Every driver, in the order `GET /1.0` lists them.
static DRIVERS: [&dyn PoolDriver; 3] = [&dir::DirPool, &btrfs::BtrfsPool, &zfs::ZfsPool];

/// The drivers hutch has (name and capabilities), for `storage_supported_drivers`.
pub fn supported_drivers() -> Vec<DriverInfo> {
    DRIVERS.iter().map(|d| d.info()).collect()
}

/// The one place a driver's name is matched: `dir`, `btrfs`, `zfs` or, as recorded, a
/// name with a driver-specific part after `:` (`zfs:<dataset>`).
fn lookup(driver: &str) -> Result<&'static dyn PoolDriver, StorageError> {
    let base = driver.split_once(':').map_or(driver, |(base, _)| base);
    DRIVERS
        .iter()
        .copied()
        .find(|d| d.info().name == base)
        .ok_or_else(|| unknown_driver(driver))
}

fn unknown_driver(name: &str) -> StorageError {
    StorageError::UnknownDriver {
        name: name.to_string(),
        known: DRIVERS
            .iter()
            .map(|d| d.info().name)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The volume driver of a pool recorded with `driver`, mounted at `root`.
pub fn open_driver(
    driver: &str,
    root: &Path,
    runner: Arc<dyn CommandRunner>,
) -> Result<Box<dyn StorageDriver>, StorageError> {
    lookup(driver)?.volumes(driver, root, runner)
}

/// Where a daemon's pools live and the tools that make them: mount points under
/// `<dir>/storage-pools/<name>`, loop files `<dir>/disks/<name>.img`, zpools named
/// `<zpool_prefix>-<name>` unless the user names them.
#[derive(Debug, Clone)]
pub struct PoolHost {
    dir: PathBuf,
    runner: Arc<dyn CommandRunner>,
    mounter: Arc<dyn Mounter>,
    zpool_prefix: String,
}

impl PoolHost {
    pub fn new(
        dir: &Path,
        runner: Arc<dyn CommandRunner>,
        mounter: Arc<dyn Mounter>,
        zpool_prefix: &str,
    ) -> Self {
        PoolHost {
            dir: dir.to_path_buf(),
            runner,
            mounter,
            zpool_prefix: zpool_prefix.to_string(),
        }
    }

    /// The real tools and mounts.
    pub fn system(dir: &Path, zpool_prefix: &str) -> Self {
        Self::new(
            dir,
            Arc::new(SystemRunner),
            Arc::new(SystemMounter),
            zpool_prefix,
        )
    }

    /// The mount point of pool `name`.
    pub fn root(&self, name: &str) -> PathBuf {
        self.dir.join("storage-pools").join(name)
    }

    /// The loop file a pool `name` gets when it has no source.
    fn disk_file(&self, name: &str) -> PathBuf {
        self.dir.join("disks").join(format!("{name}.img"))
    }

    /// The name of a pool's driver as users see it (`zfs` for `zfs:<dataset>`).
    pub fn driver_info(&self, driver: &str) -> Result<DriverInfo, StorageError> {
        Ok(lookup(driver)?.info())
    }

    /// Makes the backing store of a new pool and returns its record; nothing is mounted.
    pub fn create(&self, new: &NewPool) -> Result<PoolRecord, StorageError> {
        let driver = lookup(&new.driver)?;
        if driver.info().name != new.driver {
            // A recorded form (`zfs:<dataset>`) is not a driver a user asks for.
            return Err(unknown_driver(&new.driver));
        }
        driver.create(self, new)
    }

    /// Mounts a recorded pool at its root and opens its volume driver.
    pub fn open(&self, rec: &PoolRecord) -> Result<Arc<dyn StorageDriver>, StorageError> {
        let driver = lookup(&rec.driver)?;
        let root = self.root(&rec.name);
        let volumes = driver.volumes(&rec.driver, &root, self.runner.clone())?;
        std::fs::create_dir_all(&root).map_err(|e| StorageError::io("create", &root, e))?;
        driver.mount(self, rec, &root)?;
        Ok(Arc::from(volumes))
    }

    /// Unmounts a pool's root (its backing store stays).
    pub fn unmount(&self, rec: &PoolRecord) -> Result<(), StorageError> {
        let root = self.root(&rec.name);
        if self.mounter.is_mount_point(&root) {
            self.mounter.unmount(&root)?;
        }
        if self.mounter.is_mount_point(&root) {
            return Err(StorageError::StillMounted { path: root });
        }
        Ok(())
    }

    /// Unmounts a pool and removes what hutch made for it: its loop file or zpool and its
    /// mount point. A source of the user's stays as it was: only the empty mount point
    /// goes. Running it again after a failure finishes the job.
    pub fn destroy(&self, rec: &PoolRecord) -> Result<(), StorageError> {
        let driver = lookup(&rec.driver)?;
        self.unmount(rec)?;
        driver.destroy(self, rec)?;
        let root = self.root(&rec.name);
        let removed = if self.has_external_source(rec) {
            std::fs::remove_dir(&root)
        } else {
            std::fs::remove_dir_all(&root)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::io("remove", &root, e))
            }
            _ => Ok(()),
        }
    }

    /// Whether the pool stands on something of the user's (a directory, a device, a
    /// dataset) rather than on its own root or a loop file hutch made.
    fn has_external_source(&self, rec: &PoolRecord) -> bool {
        rec.config
            .get("source")
            .is_some_and(|s| !is_loop_file(s) && Path::new(s) != self.root(&rec.name))
    }

    /// Runs a command through the host's runner.
    fn run(&self, argv: &[&str]) -> Result<String, StorageError> {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        self.runner.run(&argv)
    }

    /// A sparse file of `size` bytes (default: as LXD) for a loop-backed pool; a failure of
    /// `then` removes it again.
    fn with_loop_file(
        &self,
        file: &Path,
        size: Option<u64>,
        then: impl FnOnce(&Path) -> Result<(), StorageError>,
    ) -> Result<u64, StorageError> {
        let disks = file.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(disks).map_err(|e| StorageError::io("create", disks, e))?;
        let size = size.unwrap_or_else(|| default_loop_size(&self.dir));
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(file)
            .map_err(|e| StorageError::io("create", file, e))?;
        let made = f
            .set_len(size)
            .map_err(|e| StorageError::io("size", file, e))
            .and_then(|()| then(file));
        if made.is_err() {
            let _ = std::fs::remove_file(file);
        }
        made.map(|()| size)
    }
}

/// Whether a pool's source is a loop file hutch made (`disks/<name>.img`).
fn is_loop_file(source: &str) -> bool {
    source.ends_with(".img")
}

/// Like LXD: a fifth of the free space, between 5 GiB and 30 GiB (the file is sparse).
pub fn default_loop_size(dir: &Path) -> u64 {
    let free = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    (free / 5).clamp(5 << 30, 30 << 30)
}

#[cfg(test)]
mod tests;
