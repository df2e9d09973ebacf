//! The daemon's shared state: directories, database, operations, events and the
//! per-instance locks that serialise lifecycle actions on one instance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hutch_runtime::IdMap;

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
    /// Cgroup directory of this daemon's containers, unique per state directory.
    pub cgroup_prefix: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub type AppState = Arc<Daemon>;

impl Daemon {
    /// Opens the state directory (creating its layout and database).
    pub fn open(dir: &Path, hutchd: PathBuf, events: EventHub) -> Result<Self> {
        for sub in [
            "database",
            "images",
            "containers",
            "storage-pools/default/images",
            "storage-pools/default/containers",
            "logs",
        ] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| crate::error::DaemonError::io("create", &p, e))?;
        }
        let db = Db::open(&dir.join("database/local.db"))?;
        let idmap = IdMap::for_root(Path::new("/etc"))?;
        Ok(Daemon {
            dir: dir.to_path_buf(),
            db,
            ops: Operations::new(events.clone()),
            events,
            hutchd,
            idmap,
            cgroup_prefix: cgroup_prefix(dir),
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

    /// Runtime directory (monitor socket, console log) of an instance.
    pub fn runtime_dir(&self, name: &str) -> PathBuf {
        self.dir.join("containers").join(name)
    }

    /// Root filesystem of an instance on the default pool.
    pub fn instance_volume(&self, name: &str) -> PathBuf {
        self.dir.join("storage-pools/default/containers").join(name)
    }

    /// Unpacked image volume on the default pool.
    pub fn image_volume(&self, fingerprint: &str) -> PathBuf {
        self.dir
            .join("storage-pools/default/images")
            .join(fingerprint)
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

/// `hutch-<hash of the state directory>`, so daemons side by side never share cgroups.
pub fn cgroup_prefix(dir: &Path) -> String {
    let mut hash: u32 = 2166136261;
    for b in dir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ *b as u32).wrapping_mul(16777619);
    }
    format!("hutch-{hash:08x}")
}
