//! Storage pools: making one (a loop file, a directory or a zpool), deleting an unused one,
//! what uses a pool, volume usage, and moving an instance's volumes to another pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hutch_api::operation::StatusCode;
use hutch_storage::StorageDriver;
use serde_json::json;

use super::runtime_status;
use crate::daemon::{instance_vol, snapshot_vol, AppState, Daemon};
use crate::db::pools::PoolRow;
use crate::error::{DaemonError, Result};

/// Pool names: letters, digits, `-` and `_`, as LXD allows.
pub fn validate_pool_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if !ok {
        return Err(DaemonError::BadRequest(format!(
            "Invalid storage pool name {name:?}"
        )));
    }
    Ok(())
}

/// Like LXD: a fifth of the free space, between 5 GiB and 30 GiB (sparse).
pub fn default_loop_size(dir: &Path) -> u64 {
    let free = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    (free / 5).clamp(5 << 30, 30 << 30)
}

/// Makes the backing store of a new pool and returns its record: a sparse loop file with
/// btrfs (`size`, default as LXD's), an existing directory (`source`, for dir and for an
/// existing btrfs directory), or a loop-file zpool. Nothing is recorded or mounted yet.
pub fn prepare_pool(
    dir: &Path,
    name: &str,
    driver: &str,
    mut config: BTreeMap<String, String>,
) -> Result<PoolRow> {
    let bad = |m: String| DaemonError::BadRequest(m);
    for key in config.keys() {
        if !matches!(key.as_str(), "source" | "size" | "zfs.pool_name") && !key.starts_with("user.")
        {
            return Err(bad(format!(
                "Invalid storage pool configuration key {key:?}"
            )));
        }
    }
    let size = match config.get("size") {
        Some(s) => hutch_api::config::parse_memory(s, 0)
            .map_err(|e| bad(format!("invalid value for config key \"size\": {e}")))?,
        None => default_loop_size(dir),
    };
    let root = dir.join("storage-pools").join(name);
    let source = config.get("source").cloned();
    let driver = match driver {
        "dir" => {
            match &source {
                Some(s) if Path::new(s) != root => {
                    if !Path::new(s).is_dir() {
                        return Err(bad(format!("Source {s:?} is not a directory")));
                    }
                }
                _ => {
                    config.insert("source".into(), root.display().to_string());
                }
            }
            "dir".to_string()
        }
        "btrfs" => {
            match &source {
                Some(s) if !s.ends_with(".img") => {
                    let p = Path::new(s);
                    if p.starts_with("/dev/") {
                        prepare_block_device(p)?;
                    } else if !is_btrfs(p) {
                        return Err(bad(format!("Source {s:?} is not a directory on btrfs")));
                    }
                }
                _ => {
                    // A file without a record is what a crash between the two left: reused.
                    let file = dir.join("disks").join(format!("{name}.img"));
                    if !file.exists() {
                        hutch_storage::create_loop_pool(&file, size, &hutch_storage::SystemRunner)?;
                    }
                    config.insert("source".into(), file.display().to_string());
                    config.insert("size".into(), size.to_string());
                }
            }
            "btrfs".to_string()
        }
        "zfs" => {
            if !Path::new("/sys/module/zfs").exists() {
                return Err(bad(
                    "zfs is not available on this host (no zfs kernel module)".into(),
                ));
            }
            // An existing dataset (`source=tank/hutch`): volumes go below it; it stays the
            // user's when the pool is deleted.
            if let Some(dataset) = source.filter(|s| !s.ends_with(".img")) {
                let exists = std::process::Command::new("zfs")
                    .args(["list", "-H", "-o", "name", &dataset])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !exists {
                    return Err(bad(format!("zfs dataset {dataset:?} not found")));
                }
                return Ok(PoolRow {
                    name: name.to_string(),
                    driver: format!("zfs:{dataset}"),
                    config,
                });
            }
            let file = dir.join("disks").join(format!("{name}.img"));
            let zpool = config
                .get("zfs.pool_name")
                .cloned()
                .unwrap_or_else(|| format!("{}-{name}", crate::daemon::cgroup_prefix(dir)));
            std::fs::create_dir_all(dir.join("disks"))
                .map_err(|e| DaemonError::io("create", dir, e))?;
            let f =
                std::fs::File::create(&file).map_err(|e| DaemonError::io("create", &file, e))?;
            f.set_len(size)
                .map_err(|e| DaemonError::io("size", &file, e))?;
            let status = std::process::Command::new("zpool")
                .args(["create", "-m", "none", "-O", "mountpoint=none", &zpool])
                .arg(&file)
                .status()
                .map_err(|e| DaemonError::io("run", "zpool", e))?;
            if !status.success() {
                let _ = std::fs::remove_file(&file);
                return Err(DaemonError::failed(
                    "create",
                    format!("zpool {zpool}"),
                    format!("zpool exited with {status}"),
                ));
            }
            config.insert("source".into(), file.display().to_string());
            config.insert("zfs.pool_name".into(), zpool.clone());
            // zfs pools name their dataset in the driver.
            format!("zfs:{zpool}")
        }
        other => {
            return Err(bad(format!(
                "Unknown storage pool driver {other:?} (known: dir, btrfs, zfs)"
            )))
        }
    };
    Ok(PoolRow {
        name: name.to_string(),
        driver,
        config,
    })
}

/// A block device for a btrfs pool: one that already holds btrfs is used as it is; an
/// empty one is formatted; one with another filesystem is refused (nothing is wiped).
fn prepare_block_device(dev: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let bad = |m: String| DaemonError::BadRequest(m);
    let meta = std::fs::metadata(dev).map_err(|e| bad(format!("{}: {e}", dev.display())))?;
    if !meta.file_type().is_block_device() {
        return Err(bad(format!("{} is not a block device", dev.display())));
    }
    let fs = std::process::Command::new("blkid")
        .args(["-o", "value", "-s", "TYPE"])
        .arg(dev)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    match fs.as_str() {
        "btrfs" => Ok(()),
        "" => {
            let out = std::process::Command::new("mkfs.btrfs")
                .arg("-q")
                .arg(dev)
                .output()
                .map_err(|e| DaemonError::io("run", "mkfs.btrfs", e))?;
            if !out.status.success() {
                return Err(bad(format!(
                    "mkfs.btrfs {}: {}",
                    dev.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(())
        }
        other => Err(bad(format!(
            "{} holds a {other} filesystem; hutch formats only empty devices",
            dev.display()
        ))),
    }
}

fn is_btrfs(p: &Path) -> bool {
    const BTRFS_SUPER_MAGIC: i64 = 0x9123683e;
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BTRFS_SUPER_MAGIC)
}

/// Undoes [`prepare_pool`] and an opened mount: unmounts the pool and removes its loop file
/// or zpool, and its mount point.
fn destroy_backing(d: &Daemon, row: &PoolRow) {
    let root = d.dir.join("storage-pools").join(&row.name);
    let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
    // Only a zpool hutch made on its own loop file is destroyed.
    let own_zpool = row
        .config
        .get("source")
        .is_some_and(|s| s.ends_with(".img"));
    if let (Some(zpool), true) = (row.driver.strip_prefix("zfs:"), own_zpool) {
        let _ = std::process::Command::new("zpool")
            .args(["destroy", "-f", zpool])
            .status();
    }
    if let Some(source) = row.config.get("source").filter(|s| s.ends_with(".img")) {
        let _ = std::fs::remove_file(source);
    }
    let external = row
        .config
        .get("source")
        .is_some_and(|s| !s.ends_with(".img") && Path::new(s) != root);
    if external {
        // The user's directory was bind-mounted here: only the empty mount point goes,
        // never what is (or, were the unmount to fail, still is) below it.
        let _ = std::fs::remove_dir(&root);
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// `POST /1.0/storage-pools`: the backing store, the mount, then the record; a failure
/// undoes what was made.
pub fn create_pool(
    d: &Daemon,
    name: &str,
    driver: &str,
    description: &str,
    config: BTreeMap<String, String>,
) -> Result<()> {
    validate_pool_name(name)?;
    if d.db.pool(name)?.is_some() {
        return Err(DaemonError::Conflict(format!(
            "Storage pool {name:?} already exists"
        )));
    }
    let row = prepare_pool(&d.dir, name, driver, config)?;
    let made = d.add_pool(&row).and_then(|()| d.db.insert_pool(&row));
    if let Err(e) = made {
        d.remove_pool(name);
        destroy_backing(d, &row);
        return Err(e);
    }
    let _ = description;
    d.events.lifecycle(
        "storage-pool-created",
        &format!("/1.0/storage-pools/{name}"),
        json!({}),
    );
    Ok(())
}

/// What blocks deleting a pool: instances on it, custom volumes, profiles whose root disk is
/// on it. (Image volumes on it are caches and go with it.)
pub fn pool_users(d: &Daemon, name: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> =
        d.db.instances()?
            .into_iter()
            .filter(|r| r.pool == name)
            .map(|r| format!("/1.0/instances/{}", r.name))
            .collect();
    for v in d.db.volumes(name)? {
        out.push(format!(
            "/1.0/storage-pools/{name}/volumes/custom/{}",
            v.name
        ));
    }
    for p in d.db.profile_names()? {
        if let Some(put) = d.db.profile(&p)? {
            let on_pool = put.devices.values().any(|dev| {
                dev.get("type").map(String::as_str) == Some("disk")
                    && dev.get("pool").map(String::as_str) == Some(name)
            });
            if on_pool {
                out.push(format!("/1.0/profiles/{p}"));
            }
        }
    }
    Ok(out)
}

/// Image fingerprints with a volume on `pool`.
pub fn pool_images(pool: &dyn StorageDriver) -> Vec<String> {
    std::fs::read_dir(pool.root().join("images"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// `DELETE /1.0/storage-pools/<name>`: refused while anything uses it.
pub fn delete_pool(d: &Daemon, name: &str) -> Result<()> {
    let row =
        d.db.pool(name)?
            .ok_or_else(|| DaemonError::NotFound("Storage pool not found".into()))?;
    if !pool_users(d, name)?.is_empty() {
        return Err(DaemonError::BadRequest(
            "The storage pool is currently in use".into(),
        ));
    }
    if let Ok(pool) = d.pool(name) {
        for fp in pool_images(&*pool) {
            pool.delete_volume(&crate::daemon::image_vol(&fp))?;
        }
    }
    d.db.delete_pool(name)?;
    d.remove_pool(name);
    destroy_backing(d, &row);
    d.events.lifecycle(
        "storage-pool-deleted",
        &format!("/1.0/storage-pools/{name}"),
        json!({}),
    );
    Ok(())
}

/// Bytes used by the files of `path` (allocated blocks; hard links counted once).
pub fn tree_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Moves a stopped instance's volumes (and its snapshots') to pool `to`: copies made on the
/// new pool first, then the record switched, then the old volumes removed, so a failure
/// leaves the instance whole where it was.
pub async fn move_instance_pool(d: AppState, name: String, to: String) -> Result<()> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let mut row = d.db.instance_or_404(&name)?;
    if row.pool == to {
        return Ok(());
    }
    if runtime_status(&d, &name).0 != StatusCode::Stopped {
        return Err(DaemonError::BadRequest(
            "Instance must be stopped to be moved to another storage pool".into(),
        ));
    }
    let (src, dst) = (d.pool(&row.pool)?, d.pool(&to)?);
    let snaps = d.db.snapshots(&name)?;
    let (d2, name2, src2, dst2) = (d.clone(), name.clone(), src.clone(), dst.clone());
    let snap_names: Vec<String> = snaps.iter().map(|s| s.name.clone()).collect();
    let copied = tokio::task::spawn_blocking(move || -> Result<()> {
        let _ = &d2;
        super::create::copy_volume(
            &src2,
            &instance_vol(&name2),
            &dst2,
            &instance_vol(&name2),
            false,
        )?;
        for s in &snap_names {
            super::create::copy_volume(
                &src2,
                &snapshot_vol(&name2, s),
                &dst2,
                &snapshot_vol(&name2, s),
                true,
            )?;
        }
        Ok(())
    })
    .await?;
    if let Err(e) = copied {
        remove_instance_volumes(
            &dst,
            &name,
            &snaps.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        );
        return Err(e);
    }
    // The root disk names the new pool: the instance's own root device, or an override of
    // the profile's.
    let expanded = super::expand(&d, &row)?;
    let root = expanded.devices.iter().find(|(_, dev)| {
        dev.get("type").map(String::as_str) == Some("disk")
            && dev.get("path").map(String::as_str) == Some("/")
    });
    let (dev_name, mut dev) = match root {
        Some((k, v)) => (k.clone(), v.clone()),
        None => (
            "root".to_string(),
            [("type", "disk"), ("path", "/")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    };
    dev.insert("pool".into(), to.clone());
    row.devices.insert(dev_name, dev);
    d.db.update_instance(&row)?;
    d.db.set_instance_pool(&name, &to)?;
    let names: Vec<String> = snaps.iter().map(|s| s.name.clone()).collect();
    tokio::task::spawn_blocking(move || remove_instance_volumes(&src, &name, &names)).await?;
    Ok(())
}

fn remove_instance_volumes(pool: &Arc<dyn StorageDriver>, name: &str, snaps: &[String]) {
    for s in snaps {
        let _ = pool.delete_volume(&snapshot_vol(name, s));
    }
    let _ = std::fs::remove_dir(pool.path(&Path::new("containers-snapshots").join(name)));
    let _ = pool.delete_volume(&instance_vol(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_follow_lxd() {
        for ok in ["default", "fast-1", "big_pool"] {
            validate_pool_name(ok).unwrap();
        }
        for bad in ["", "-x", "a/b", "a b", &"p".repeat(65)] {
            assert!(validate_pool_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dir_pools_and_bad_config_are_prepared_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let row = prepare_pool(dir.path(), "p", "dir", BTreeMap::new()).unwrap();
        assert_eq!(row.driver, "dir");
        assert_eq!(
            row.config["source"],
            dir.path().join("storage-pools/p").display().to_string()
        );
        let bad = |driver: &str, k: &str, v: &str| {
            let cfg = BTreeMap::from([(k.to_string(), v.to_string())]);
            matches!(
                prepare_pool(dir.path(), "q", driver, cfg),
                Err(DaemonError::BadRequest(_))
            )
        };
        assert!(bad("dir", "source", "/no/such/dir"));
        assert!(bad("dir", "bogus", "1"));
        assert!(bad("btrfs", "size", "lots"));
        assert!(bad("btrfs", "source", "/dev/sdz"));
        assert!(bad("nosuch", "user.x", "1"));
    }

    #[test]
    fn usage_counts_blocks_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 64 << 10]).unwrap();
        let one = tree_usage(dir.path());
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(tree_usage(dir.path()), one, "a hard link adds nothing");
        assert!(one >= 64 << 10);
    }
}
