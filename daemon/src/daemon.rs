//! The daemon's shared state: directories, database, operations, events and the
//! per-instance locks that serialise lifecycle actions on one instance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hutch_runtime::IdMap;
use hutch_storage::{StorageDriver, SystemRunner};

use crate::db::Db;
use crate::error::Result;
use crate::events::EventHub;
use crate::operations::Operations;

/// Shared by every request handler and background task.
#[derive(Debug)]
pub struct Daemon {
    pub dir: PathBuf,
    pub db: Db,
    pub ops: Operations,
    pub events: EventHub,
    /// The hutchd binary, re-executed as monitor and exec helper.
    pub hutchd: PathBuf,
    /// The id range of unprivileged containers.
    pub idmap: IdMap,
    /// The `default` storage pool.
    pub pool: Box<dyn StorageDriver>,
    /// Cgroup directory of this daemon's containers, unique per state directory.
    pub cgroup_prefix: String,
    /// Live network state: dnsmasq children, proxies, the nftables runner.
    pub net: crate::engine::network::NetState,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub type AppState = Arc<Daemon>;

impl Daemon {
    /// Opens the state directory (creating its layout and database) and mounts the pool.
    pub fn open(dir: &Path, hutchd: PathBuf, events: EventHub) -> Result<Self> {
        for sub in [
            "database",
            "images",
            "containers",
            "storage-pools/default",
            "logs",
            "disks",
            "networks",
        ] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| crate::error::DaemonError::io("create", &p, e))?;
        }
        let db = Db::open(&dir.join("database/local.db"))?;
        let pool = open_pool(dir, &db)?;
        for sub in [
            "images",
            "containers",
            "containers-snapshots",
            "custom",
            "custom-snapshots",
        ] {
            let p = pool.root().join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| crate::error::DaemonError::io("create", &p, e))?;
        }
        let idmap = IdMap::for_root(Path::new("/etc"))?;
        Ok(Daemon {
            dir: dir.to_path_buf(),
            db,
            pool,
            ops: Operations::new(events.clone()),
            events,
            hutchd,
            idmap,
            cgroup_prefix: cgroup_prefix(dir),
            net: crate::engine::network::NetState::new(
                Box::new(hutch_network::nft::SystemNft),
                &cgroup_prefix(dir),
            ),
            locks: Mutex::default(),
        })
    }

    /// The lock that serialises lifecycle actions on instance `name`.
    pub fn instance_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Drops the lock of a deleted instance, so the map does not grow with every name
    /// ever used (holders keep their own reference).
    pub fn forget_instance_lock(&self, name: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Runtime directory (monitor socket, console log) of an instance.
    pub fn runtime_dir(&self, name: &str) -> PathBuf {
        self.dir.join("containers").join(name)
    }

    /// Volume of an instance on the default pool (its root filesystem is `rootfs` in it).
    pub fn instance_volume(&self, name: &str) -> PathBuf {
        self.pool.path(&instance_vol(name))
    }

    /// The uploaded image file.
    pub fn image_file(&self, fingerprint: &str) -> PathBuf {
        self.dir.join("images").join(fingerprint)
    }

    /// The cgroup path of an instance.
    pub fn cgroup_path(&self, name: &str) -> String {
        format!("{}/{name}", self.cgroup_prefix)
    }
}

/// The pool-relative name of an instance's volume.
pub fn instance_vol(name: &str) -> PathBuf {
    Path::new("containers").join(name)
}

/// The pool-relative name of an image's volume.
pub fn image_vol(fingerprint: &str) -> PathBuf {
    Path::new("images").join(fingerprint)
}

/// The pool-relative name of a custom volume.
pub fn custom_vol(name: &str) -> PathBuf {
    Path::new("custom").join(name)
}

/// The pool-relative name of an instance snapshot's volume.
pub fn snapshot_vol(instance: &str, snapshot: &str) -> PathBuf {
    Path::new("containers-snapshots")
        .join(instance)
        .join(snapshot)
}

/// The default pool as the database describes it, mounted (a `dir` pool when none is
/// recorded yet).
fn open_pool(dir: &Path, db: &Db) -> Result<Box<dyn StorageDriver>> {
    let root = dir.join("storage-pools/default");
    let row = db.pool("default")?;
    let driver = row.as_ref().map(|r| r.driver.as_str()).unwrap_or("dir");
    let source = row
        .as_ref()
        .and_then(|r| r.config.get("source"))
        .filter(|s| s.ends_with(".img"));
    match (driver, source) {
        ("btrfs", Some(source)) => hutch_storage::attach_and_mount(Path::new(source), &root)?,
        (zfs, Some(source)) if zfs.starts_with("zfs:") => {
            import_zpool(&zfs[4..], Path::new(source))
        }
        _ => {}
    }
    Ok(hutch_storage::open_driver(
        driver,
        &root,
        Arc::new(SystemRunner),
    )?)
}

/// Imports a loop-file zpool after a reboot (`zpool import -d <dir of the file>`).
fn import_zpool(name: &str, file: &Path) {
    let imported = std::process::Command::new("zpool")
        .args(["list", name])
        .output()
        .is_ok_and(|o| o.status.success());
    if !imported {
        let dir = file.parent().unwrap_or(Path::new("/"));
        let _ = std::process::Command::new("zpool")
            .arg("import")
            .arg("-d")
            .arg(dir)
            .arg(name)
            .status();
    }
}

/// `hutch-<hash of the state directory>`, so daemons side by side never share cgroups.
pub fn cgroup_prefix(dir: &Path) -> String {
    let mut hash: u32 = 2166136261;
    for b in dir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ *b as u32).wrapping_mul(16777619);
    }
    format!("hutch-{hash:08x}")
}
