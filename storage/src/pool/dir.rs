//! `dir` pools: the pool's own directory, or a directory of the user's bind-mounted there.

use std::path::Path;
use std::sync::Arc;

use super::{NewPool, PoolDriver, PoolHost, PoolRecord};
use crate::driver::{DriverInfo, StorageDriver};
use crate::error::StorageError;
use crate::runner::CommandRunner;

#[derive(Debug)]
pub(crate) struct DirPool;

impl PoolDriver for DirPool {
    fn info(&self) -> DriverInfo {
        crate::dir::INFO
    }

    fn create(&self, host: &PoolHost, new: &NewPool) -> Result<PoolRecord, StorageError> {
        let root = host.root(&new.name);
        let mut config = new.config.clone();
        match config.get("source") {
            Some(s) if Path::new(s) != root => {
                if !Path::new(s).is_dir() {
                    return Err(StorageError::InvalidSource {
                        source_path: s.clone(),
                        reason: "is not a directory".into(),
                    });
                }
            }
            _ => {
                config.insert("source".into(), root.display().to_string());
            }
        }
        Ok(PoolRecord {
            name: new.name.clone(),
            driver: self.info().name.into(),
            config,
        })
    }

    fn mount(&self, host: &PoolHost, rec: &PoolRecord, root: &Path) -> Result<(), StorageError> {
        bind_source(host, rec, root)
    }

    fn destroy(&self, _host: &PoolHost, _rec: &PoolRecord) -> Result<(), StorageError> {
        Ok(())
    }

    fn volumes(
        &self,
        _driver: &str,
        root: &Path,
        _runner: Arc<dyn CommandRunner>,
    ) -> Result<Box<dyn StorageDriver>, StorageError> {
        Ok(Box::new(crate::dir::DirDriver::new(root)))
    }
}

/// A directory source other than the root itself is bind-mounted at the root.
pub(super) fn bind_source(
    host: &PoolHost,
    rec: &PoolRecord,
    root: &Path,
) -> Result<(), StorageError> {
    match rec.config.get("source") {
        Some(src) if Path::new(src) != root && !host.mounter.is_mount_point(root) => {
            host.mounter.bind(Path::new(src), root)
        }
        _ => Ok(()),
    }
}
