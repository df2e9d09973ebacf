//! `btrfs` pools: a loop file hutch makes and formats, an empty block device it formats (one
//! already holding btrfs is used as it is), or a directory on btrfs bind-mounted.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use super::{is_loop_file, NewPool, PoolDriver, PoolHost, PoolRecord};
use crate::driver::{DriverInfo, StorageDriver};
use crate::error::StorageError;
use crate::runner::CommandRunner;

/// Mount options of a btrfs pool: containers may delete the subvolumes they made.
const OPTIONS: &str = "user_subvol_rm_allowed";

#[derive(Debug)]
pub(crate) struct BtrfsPool;

impl PoolDriver for BtrfsPool {
    fn info(&self) -> DriverInfo {
        crate::btrfs::INFO
    }

    fn create(&self, host: &PoolHost, new: &NewPool) -> Result<PoolRecord, StorageError> {
        let mut config = new.config.clone();
        match config.get("source").filter(|s| !is_loop_file(s)) {
            Some(s) if s.starts_with("/dev/") => prepare_block_device(host, Path::new(s))?,
            Some(s) => {
                if !is_btrfs(Path::new(s)) {
                    return Err(StorageError::InvalidSource {
                        source_path: s.clone(),
                        reason: "is not a directory on btrfs".into(),
                    });
                }
            }
            None => {
                let file = host.disk_file(&new.name);
                // A file without a record is what a crash between the two left: reused.
                let size = match std::fs::metadata(&file) {
                    Ok(m) => m.len(),
                    Err(_) => host.with_loop_file(&file, new.size, |f| {
                        host.run(&["mkfs.btrfs", "-q", &f.display().to_string()])
                            .map(|_| ())
                    })?,
                };
                config.insert("source".into(), file.display().to_string());
                config.insert("size".into(), size.to_string());
            }
        }
        Ok(PoolRecord {
            name: new.name.clone(),
            driver: self.info().name.into(),
            config,
        })
    }

    fn mount(&self, host: &PoolHost, rec: &PoolRecord, root: &Path) -> Result<(), StorageError> {
        let source = rec.config.get("source").map(Path::new);
        match source {
            _ if host.mounter.is_mount_point(root) => Ok(()),
            Some(file) if is_loop_file(&file.to_string_lossy()) => {
                host.mounter.mount_loop(file, root, "btrfs", OPTIONS)
            }
            Some(dev) if dev.starts_with("/dev/") => {
                host.mounter.mount_device(dev, root, "btrfs", OPTIONS)
            }
            _ => super::dir::bind_source(host, rec, root),
        }
    }

    fn destroy(&self, _host: &PoolHost, rec: &PoolRecord) -> Result<(), StorageError> {
        match rec.config.get("source").filter(|s| is_loop_file(s)) {
            Some(file) => match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StorageError::io("remove", file, e))
                }
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn volumes(
        &self,
        _driver: &str,
        root: &Path,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<Box<dyn StorageDriver>, StorageError> {
        Ok(Box::new(crate::btrfs::BtrfsDriver::new(root, runner)))
    }
}

/// A block device for a btrfs pool: one that already holds btrfs is used as it is; an
/// empty one is formatted; one with another filesystem is refused (nothing is wiped).
fn prepare_block_device(host: &PoolHost, dev: &Path) -> Result<(), StorageError> {
    let invalid = |reason: String| StorageError::InvalidSource {
        source_path: dev.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(dev).map_err(|e| invalid(format!("cannot be used ({e})")))?;
    if !meta.file_type().is_block_device() {
        return Err(invalid("is not a block device".into()));
    }
    let name = dev.display().to_string();
    // blkid exits 2 when it finds no filesystem; any other failure stops here, so a device
    // whose content is unknown is never formatted.
    let fstype = match host.run(&["blkid", "-o", "value", "-s", "TYPE", &name]) {
        Ok(out) => out.trim().to_string(),
        Err(StorageError::Command { code: Some(2), .. }) => String::new(),
        Err(e) => return Err(e),
    };
    match fstype.as_str() {
        "btrfs" => Ok(()),
        "" => host.run(&["mkfs.btrfs", "-q", &name]).map(|_| ()),
        other => Err(StorageError::DeviceInUse {
            device: dev.to_path_buf(),
            fstype: other.to_string(),
        }),
    }
}

/// Whether `p` is on a btrfs filesystem.
fn is_btrfs(p: &Path) -> bool {
    const BTRFS_SUPER_MAGIC: i64 = 0x9123683e;
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BTRFS_SUPER_MAGIC)
}
