//! `zfs` pools: a zpool hutch makes on a loop file of its own (recorded as
//! `zfs:<zpool>`), or an existing dataset of the user's (`zfs:<dataset>`), below which the
//! volumes' datasets live. Volumes are mounted one by one, so the pool's root is a plain
//! directory.

use std::path::Path;
use std::sync::Arc;

use super::{is_loop_file, NewPool, PoolDriver, PoolHost, PoolRecord};
use crate::driver::{DriverInfo, StorageDriver};
use crate::error::StorageError;
use crate::runner::CommandRunner;

#[derive(Debug)]
pub(crate) struct ZfsPool;

/// The dataset of a pool recorded as `zfs:<dataset>`.
fn dataset(driver: &str) -> Option<&str> {
    driver.strip_prefix("zfs:").filter(|d| !d.is_empty())
}

/// The zpool hutch made for a pool, where it made one (on its own loop file).
fn own_zpool(rec: &PoolRecord) -> Option<&str> {
    let own = rec.config.get("source").is_some_and(|s| is_loop_file(s));
    dataset(&rec.driver).filter(|_| own)
}

impl PoolDriver for ZfsPool {
    fn info(&self) -> DriverInfo {
        crate::zfs::INFO
    }

    fn create(&self, host: &PoolHost, new: &NewPool) -> Result<PoolRecord, StorageError> {
        if !host.mounter.has_filesystem("zfs") {
            return Err(StorageError::Unavailable {
                driver: "zfs",
                reason: "no zfs kernel module",
            });
        }
        let mut config = new.config.clone();
        // An existing dataset (`source=tank/hutch`): volumes go below it; it stays the
        // user's when the pool is deleted.
        if let Some(ds) = config.get("source").filter(|s| !is_loop_file(s)) {
            return match host.run(&["zfs", "list", "-H", "-o", "name", ds]) {
                Ok(_) => Ok(PoolRecord {
                    name: new.name.clone(),
                    driver: format!("zfs:{ds}"),
                    config,
                }),
                Err(StorageError::Command { .. }) => Err(StorageError::InvalidSource {
                    source_path: ds.clone(),
                    reason: "is not a zfs dataset".into(),
                }),
                Err(e) => Err(e),
            };
        }
        let zpool = config
            .get("zfs.pool_name")
            .cloned()
            .unwrap_or_else(|| format!("{}-{}", host.zpool_prefix, new.name));
        let file = host.disk_file(&new.name);
        host.with_loop_file(&file, new.size, |f| {
            let f = f.display().to_string();
            host.run(&[
                "zpool",
                "create",
                "-m",
                "none",
                "-O",
                "mountpoint=none",
                &zpool,
                &f,
            ])
            .map(|_| ())
        })?;
        config.insert("source".into(), file.display().to_string());
        config.insert("zfs.pool_name".into(), zpool.clone());
        Ok(PoolRecord {
            name: new.name.clone(),
            driver: format!("zfs:{zpool}"),
            config,
        })
    }

    /// A zpool on a loop file is imported again after a reboot; volumes mount themselves.
    fn mount(&self, host: &PoolHost, rec: &PoolRecord, _root: &Path) -> Result<(), StorageError> {
        let (Some(zpool), Some(file)) = (own_zpool(rec), rec.config.get("source")) else {
            return Ok(());
        };
        if host
            .run(&["zpool", "list", "-H", "-o", "name", zpool])
            .is_ok()
        {
            return Ok(());
        }
        let dir = Path::new(file).parent().unwrap_or(Path::new("/"));
        host.run(&["zpool", "import", "-d", &dir.display().to_string(), zpool])
            .map(|_| ())
    }

    /// Only a zpool hutch made on its own loop file is destroyed, then its file.
    fn destroy(&self, host: &PoolHost, rec: &PoolRecord) -> Result<(), StorageError> {
        let (Some(zpool), Some(file)) = (own_zpool(rec), rec.config.get("source")) else {
            return Ok(());
        };
        if host
            .run(&["zpool", "list", "-H", "-o", "name", zpool])
            .is_ok()
        {
            host.run(&["zpool", "destroy", "-f", zpool])?;
        }
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::io("remove", file, e))
            }
            _ => Ok(()),
        }
    }

    fn volumes(
        &self,
        driver: &str,
        root: &Path,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<Box<dyn StorageDriver>, StorageError> {
        let ds = dataset(driver).ok_or_else(|| super::unknown_driver(driver))?;
        Ok(Box::new(crate::zfs::ZfsDriver::new(root, ds, runner)))
    }
}
